-- stg_enrichment_samples: the enrichment samples of the candidate items, one row per (gen_id, sample),
-- with each sample's final answer as a comparison key against the same item's options
-- (sample_key NULL = a vote for nothing: no final answer, or one that names no valid option).
-- A seed's samples from index M on are left out: sample M of a calibration seed is its stand-in
-- answer (jobs/calibration.py), not a vote.
SELECT e.gen_id, e.sample, e.knowledge, e.reasoning, e.final_answer_raw, e.final_answer, e.final_answer_index,
       e.request_id AS enrichment_request_id, e.model AS enrichment_model,
       e.prompt_version AS enrichment_prompt_version,
       answer_key(c.answer_format, e.final_answer, e.final_answer_index, c.choices) AS sample_key
FROM ${table.enriched} e
JOIN stg_candidates c ON c.gen_id = e.gen_id AND c.item_kind = coalesce(e.item_kind, 'generated')
WHERE c.item_kind <> 'seed' OR e.sample < ${samples_per_item}
