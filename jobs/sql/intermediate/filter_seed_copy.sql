-- filter_seed_copy: is a generated item its seed again (udfs/copies.py)? It fails
-- 'copies_seed_question' when its question (normalized, without its passage) is its seed's or any
-- seed's of its task, and 'seed_with_answer_changed' when it also keeps the seed's passage (or a cut
-- of it) and changes the gold answer; a question many seeds of the task share (a frame) is a copy
-- only with a seed's passage. Passes: 'new_question', 'new_body_for_frame', 'no_question' (no
-- question to compare: validation rejects it), 'seed_item' (an answer-enriched seed itself).
-- evidence: the seed copied, whether the question is a frame, how many seeds ask it, passage overlap.
SELECT c.gen_id,
       'seed_copy' AS filter,
       CASE WHEN c.item_kind = 'seed' THEN true ELSE k.passed END AS passed,
       CASE WHEN c.item_kind = 'seed' THEN 'seed_item' ELSE k.reason END AS reason,
       CAST(NULL AS DOUBLE) AS score,
       k.evidence
FROM stg_candidates c
LEFT JOIN seed_copy_checks k ON k.gen_id = c.gen_id
