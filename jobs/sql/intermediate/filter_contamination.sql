-- filter_contamination: no held-out (validation/test) item in the training data
-- (jobs/filters/contamination.py: word n-grams against `heldout`, whole-text match for items shorter
-- than n words, character-shingle similarity for short items), read from the view
-- `contamination_matches` the prepare step registers: at most one row per matched item_id, for the
-- candidates (item_id = gen_id) and for their seeds (item_id = seed_id).
--   the item matches a held-out item          -> failed, 'heldout_<rule>' (ngram, whole_text, near_dup)
--   its seed matches a held-out item          -> failed, 'seed_contaminated' (training splits leak test
--                                                items; what is generated from a leaked item is suspect)
--   neither                                   -> passed, 'clean'
-- (When the engine is not installed the runner records 'not_checked' for every item without
-- running this model: unchecked, never clean.)
-- score = the match's score (overlap share or similarity); evidence names the held-out item.
WITH best AS (
    SELECT * FROM (
        SELECT m.*, row_number() OVER (PARTITION BY m.item_id ORDER BY m.score DESC NULLS LAST, m.heldout_id) AS rn
        FROM contamination_matches m
    ) WHERE rn = 1
),
decided AS (
    SELECT c.gen_id,
           coalesce(i.item_id, s.item_id) IS NOT NULL AS hit,
           CASE WHEN i.item_id IS NOT NULL THEN concat('heldout_', i.rule)
                WHEN s.item_id IS NOT NULL THEN 'seed_contaminated'
                ELSE 'clean' END AS reason,
           CASE WHEN i.item_id IS NOT NULL THEN i.score ELSE s.score END AS score,
           CASE WHEN i.item_id IS NOT NULL
                THEN named_struct('matched_item', i.item_id, 'rule', i.rule, 'heldout_id', i.heldout_id,
                                  'heldout_task', i.heldout_task, 'heldout_split', i.heldout_split,
                                  'matched', i.matched)
                WHEN s.item_id IS NOT NULL
                THEN named_struct('matched_item', s.item_id, 'rule', s.rule, 'heldout_id', s.heldout_id,
                                  'heldout_task', s.heldout_task, 'heldout_split', s.heldout_split,
                                  'matched', s.matched) END AS match
    FROM stg_candidates c
    LEFT JOIN best i ON i.item_id = c.gen_id
    LEFT JOIN best s ON s.item_id = c.seed_id AND c.item_kind = 'generated'
)
SELECT gen_id,
       'contamination' AS filter,
       reason = 'clean' AS passed,
       reason,
       CAST(score AS DOUBLE) AS score,
       CASE WHEN reason = 'clean' THEN CAST(NULL AS STRING) ELSE to_json(match) END AS evidence
FROM decided
