-- int_chosen_sample: the one enrichment sample whose knowledge and reasoning go into `curated`, per
-- candidate: a sample that agrees with the item's answer (any sample for formats with no comparable
-- answer), preferring samples with non-empty reasoning, then non-empty knowledge, then the lowest
-- sample index (deterministic: the same enrichments always give the same choice). Items whose
-- samples all disagree fall back to the same order over every sample; they fail verification and
-- never reach `curated` unless verification is disabled.
SELECT gen_id, sample, knowledge, reasoning, final_answer_raw, final_answer, final_answer_index,
       enrichment_request_id, enrichment_model, enrichment_prompt_version, agrees
FROM (
    SELECT s.*,
           coalesce(s.sample_key = c.answer_key, false) AS agrees,
           row_number() OVER (
               PARTITION BY s.gen_id
               ORDER BY coalesce(s.sample_key = c.answer_key, false) DESC,
                        length(trim(coalesce(s.reasoning, ''))) > 0 DESC,
                        length(trim(coalesce(s.knowledge, ''))) > 0 DESC,
                        s.sample, s.enrichment_request_id
           ) AS rn
    FROM stg_enrichment_samples s
    JOIN stg_candidates c ON c.gen_id = s.gen_id
)
WHERE rn = 1
