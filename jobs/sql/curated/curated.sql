-- curated: the candidates that passed every filter gating `curated` (all but license), ready for
-- training: the item, the knowledge and reasoning of one enrichment sample that agrees with the
-- majority (int_chosen_sample), the pretraining document rendered from both (udfs/formatting.py),
-- the vote counts, the license, and the lineage back to the seed, the generation request and the
-- chosen enrichment request.
SELECT c.gen_id, c.item_kind, c.seed_id, c.task, c.task_family, c.answer_format,
       c.question, c.context, c.choices, c.answer_index, c.answer_text,
       s.knowledge, s.reasoning,
       pretraining_document(c.answer_format, c.question, c.context, c.choices, c.answer_index, c.answer_text,
                            s.knowledge, s.reasoning, s.final_answer_raw, s.final_answer,
                            s.final_answer_index) AS document,
       v.votes_agree, v.votes_expected, v.votes_returned, v.votes_null, v.agreement,
       ver.reason AS verification,
       l.license, l.license_class, l.commercial_ok, l.dataset_path,
       c.generation_request_id, c.generation_model, c.generation_prompt_version,
       s.sample AS enrichment_sample, s.enrichment_request_id, s.enrichment_model, s.enrichment_prompt_version,
       ${run_id} AS run_id, current_timestamp() AS curated_at
FROM stg_candidates c
JOIN int_votes v ON v.gen_id = c.gen_id
LEFT JOIN int_chosen_sample s ON s.gen_id = c.gen_id
JOIN stg_item_licenses l ON l.gen_id = c.gen_id
LEFT JOIN (SELECT gen_id, reason FROM int_filter_decisions WHERE filter = 'verification') ver
    ON ver.gen_id = c.gen_id
LEFT ANTI JOIN (SELECT DISTINCT gen_id FROM int_filter_decisions WHERE gate = 'curated' AND NOT passed) f
    ON f.gen_id = c.gen_id
