-- filter_near_dup: near-duplicates by MinHash (jobs/filters/near_dup.py: signatures, LSH banding,
-- candidate pairs confirmed by Jaccard >= curate.near_dup.threshold, connected components), read from
-- the view `near_dup_matches` the prepare step registers: one row per generated item of the pool
-- (this run's generated candidates and the generated rows already in `curated`).
--   a generated item whose most similar seed is at or above the threshold -> failed 'near_dup_of_seed'
--     (a reworded training item is not new data; the issue's real-model case: a few-shot exemplar
--     echoed with its first word changed);
--   otherwise one survivor per component, chosen like filter_exact_dup (already curated, then passed
--     validation and verification, then highest agreement, then lowest gen_id), among the members
--     that are not seed near-duplicates; the others fail 'near_duplicate';
--   alone in its component -> passed 'unique'; the survivor -> passed 'survivor'.
-- Answer-enriched seeds are training items themselves: passed 'seed_item'. A generated item the
-- engine returned no row for fails 'not_signed'. (When the engine is not installed the runner
-- records 'not_checked' for every item without running this model.)
-- score = the highest Jaccard to another item or seed; evidence names the matches.
WITH quality AS (
    SELECT v.gen_id, v.passed AND r.passed AS quality_ok
    FROM filter_validation v JOIN filter_verification r ON r.gen_id = v.gen_id
),
matches AS (
    SELECT * FROM (
        SELECT m.*, row_number() OVER (PARTITION BY m.gen_id ORDER BY m.component_id) AS rn
        FROM near_dup_matches m
    ) WHERE rn = 1
),
pool AS (
    SELECT m.*, c.gen_id IS NOT NULL AS is_candidate, cur.gen_id IS NOT NULL AS in_curated,
           coalesce(q.quality_ok, cur.gen_id IS NOT NULL) AS quality_ok,
           coalesce(iv.agreement, cur.agreement) AS agreement
    FROM matches m
    LEFT JOIN stg_candidates c ON c.gen_id = m.gen_id
    LEFT JOIN stg_curated_existing cur ON cur.gen_id = m.gen_id
    LEFT JOIN quality q ON q.gen_id = m.gen_id
    LEFT JOIN int_votes iv ON iv.gen_id = m.gen_id
    WHERE c.gen_id IS NOT NULL OR cur.gen_id IS NOT NULL
),
ranked AS (
    SELECT *,
           first(CASE WHEN seed_match_id IS NULL THEN gen_id END, true) OVER (
               PARTITION BY component_id
               ORDER BY seed_match_id IS NULL DESC, in_curated DESC, quality_ok DESC,
                        agreement DESC NULLS LAST, gen_id
               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS survivor,
           count(*) OVER (PARTITION BY component_id) AS members
    FROM pool
),
decided AS (
    SELECT c.gen_id, c.item_kind, r.component_id, r.component_size, r.members, r.survivor,
           r.best_match_id, r.best_match_jaccard, r.seed_match_id, r.seed_match_jaccard,
           CASE WHEN c.item_kind = 'seed' THEN 'seed_item'
                WHEN r.gen_id IS NULL THEN 'not_signed'
                WHEN r.seed_match_id IS NOT NULL THEN 'near_dup_of_seed'
                WHEN r.survivor <> r.gen_id THEN 'near_duplicate'
                WHEN r.members > 1 THEN 'survivor'
                ELSE 'unique' END AS reason
    FROM stg_candidates c
    LEFT JOIN ranked r ON r.gen_id = c.gen_id
)
SELECT gen_id,
       'near_dup' AS filter,
       reason IN ('seed_item', 'survivor', 'unique') AS passed,
       reason,
       CAST(greatest(best_match_jaccard, seed_match_jaccard) AS DOUBLE) AS score,
       CASE WHEN reason IN ('seed_item', 'not_signed') THEN CAST(NULL AS STRING)
            ELSE to_json(named_struct(
                'component_id', component_id, 'component_size', component_size, 'survivor', survivor,
                'best_match_id', best_match_id, 'best_match_jaccard', best_match_jaccard,
                'seed_match_id', seed_match_id, 'seed_match_jaccard', seed_match_jaccard)) END AS evidence
FROM decided
