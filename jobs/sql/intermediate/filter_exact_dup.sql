-- filter_exact_dup: one item per normalized (context, question, answer) — stg_candidates.dedup_key.
-- A generated item whose key is a seed's key (any task's training data) fails 'duplicate_of_seed':
-- a copy of a training item is not new data. Otherwise the items sharing a key — this run's
-- candidates and the rows already in `curated` (earlier runs; of other tasks than this run's) — keep
-- one survivor:
--   1. an item already in `curated` (survivors never flip between runs),
--   2. an item that passed validation and verification (a broken copy never knocks out a good one),
--   3. the highest verification agreement,
--   4. the lowest gen_id.
-- The others fail 'duplicate' with the survivor as evidence. Items alone in their group pass 'unique',
-- survivors of a group pass 'survivor'. score = the group size.
WITH quality AS (
    SELECT v.gen_id, v.passed AND r.passed AS quality_ok
    FROM filter_validation v JOIN filter_verification r ON r.gen_id = v.gen_id
),
pool AS (
    SELECT c.gen_id, c.dedup_key, c.item_kind, cur.gen_id IS NOT NULL AS in_curated,
           q.quality_ok, iv.agreement, true AS is_candidate
    FROM stg_candidates c
    JOIN quality q ON q.gen_id = c.gen_id
    JOIN int_votes iv ON iv.gen_id = c.gen_id
    LEFT JOIN stg_curated_existing cur ON cur.gen_id = c.gen_id
    UNION ALL
    SELECT e.gen_id, e.dedup_key, e.item_kind, true, true, e.agreement, false
    FROM stg_curated_existing e
    LEFT ANTI JOIN stg_candidates c ON c.gen_id = e.gen_id
    -- a curated row of a task in this run's scope that is no longer a candidate is about to be
    -- deleted: it must not knock anything out
    WHERE NOT (${all_tasks} OR array_contains(${tasks}, e.task))
),
ranked AS (
    SELECT *,
           count(*) OVER (PARTITION BY dedup_key) AS group_size,
           first(gen_id) OVER (PARTITION BY dedup_key
                               ORDER BY in_curated DESC, quality_ok DESC, agreement DESC NULLS LAST, gen_id
                               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS survivor
    FROM pool
),
seed_copies AS (
    SELECT c.gen_id, min(k.seed_id) AS seed_id, count(*) AS seed_copies
    FROM stg_candidates c
    JOIN stg_seed_keys k ON k.dedup_key = c.dedup_key AND k.seed_id <> c.gen_id
    WHERE c.item_kind = 'generated'
    GROUP BY c.gen_id
)
SELECT r.gen_id,
       'exact_dup' AS filter,
       s.seed_id IS NULL AND r.survivor = r.gen_id AS passed,
       CASE WHEN s.seed_id IS NOT NULL THEN 'duplicate_of_seed'
            WHEN r.survivor <> r.gen_id THEN 'duplicate'
            WHEN r.group_size > 1 THEN 'survivor'
            ELSE 'unique' END AS reason,
       CAST(r.group_size AS DOUBLE) AS score,
       to_json(named_struct('dedup_key', substr(r.dedup_key, 1, 16), 'group_size', r.group_size,
                            'survivor', r.survivor, 'seed_id', s.seed_id)) AS evidence
FROM ranked r
LEFT JOIN seed_copies s ON s.gen_id = r.gen_id
WHERE r.is_candidate
