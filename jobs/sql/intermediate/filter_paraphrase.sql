-- filter_paraphrase: no held-out item reworded or translated (jobs/filters/paraphrase.py: sentence
-- embeddings, exact top-k retrieval against `heldout_embeddings`, an LLM judge per pair at or above
-- curate.paraphrase.floor, or from margin_floor up when the pair's ratio margin is >= margin
-- (udfs.paraphrase.retrieval_rule); NeMo-Skills' check, after LMSYS's rephrased-samples study), read from the
-- views the prepare step registers:
--   paraphrase_eligible  the candidates that passed validation, exact_dup, near_dup and contamination
--                        (only these are embedded and judged)
--   paraphrase_matches   their neighbours above the floor with the judge's verdict (NULL: no verdict)
-- Per candidate:
--   not eligible (a cheaper filter rejected it)  -> passed, 'skipped' (it is out of `curated` anyway;
--                                                  evidence names the filters that rejected it)
--   a neighbour judged 'same'                    -> failed, 'paraphrase_of_heldout'
--   a neighbour without a verdict                -> failed, 'judge_unanswered' (budget stop or an
--                                                  unreadable verdict: never called clean; rerun)
--   every neighbour judged 'different'           -> passed, 'judged_different'
--   no neighbour at or above the floor           -> passed, 'no_neighbour'
-- score = the highest similarity among the neighbours above the floor; evidence = the deciding pair:
-- heldout_id, task, split, cosine similarity, the rule that sent it to the judge (retrieved_by:
-- 'floor' or 'margin' from the English model, 'multilingual' from the cross-lingual retrieval of an
-- item in a non-Latin script, 'e5' from that of an item in Devanagari), the verdict and the judge's
-- request_id.
WITH ranked AS (
    SELECT m.*,
           row_number() OVER (
               PARTITION BY m.gen_id
               ORDER BY CASE WHEN m.verdict = 'same' THEN 0 WHEN m.verdict IS NULL THEN 1 ELSE 2 END,
                        m.similarity DESC, m.heldout_id) AS rn,
           max(m.similarity) OVER (PARTITION BY m.gen_id) AS best_similarity,
           count(*) OVER (PARTITION BY m.gen_id) AS neighbours
    FROM paraphrase_matches m
),
deciding AS (
    SELECT * FROM ranked WHERE rn = 1
),
rejected_by AS (
    SELECT gen_id, sort_array(collect_list(filter)) AS filters
    FROM (SELECT gen_id, filter, passed FROM filter_validation
          UNION ALL SELECT gen_id, filter, passed FROM filter_exact_dup
          UNION ALL SELECT gen_id, filter, passed FROM filter_near_dup
          UNION ALL SELECT gen_id, filter, passed FROM filter_contamination)
    WHERE NOT passed
    GROUP BY gen_id
),
decided AS (
    SELECT c.gen_id, d.heldout_id, d.heldout_task, d.heldout_split, d.similarity, d.retrieved_by, d.verdict,
           d.request_id,
           d.best_similarity, d.neighbours, r.filters AS rejected_by,
           CASE WHEN e.gen_id IS NULL THEN 'skipped'
                WHEN d.gen_id IS NULL THEN 'no_neighbour'
                WHEN d.verdict = 'same' THEN 'paraphrase_of_heldout'
                WHEN d.verdict IS NULL THEN 'judge_unanswered'
                ELSE 'judged_different' END AS reason
    FROM stg_candidates c
    LEFT JOIN paraphrase_eligible e ON e.gen_id = c.gen_id
    LEFT JOIN deciding d ON d.gen_id = c.gen_id AND e.gen_id IS NOT NULL
    LEFT JOIN rejected_by r ON r.gen_id = c.gen_id
)
SELECT gen_id,
       'paraphrase' AS filter,
       reason IN ('skipped', 'no_neighbour', 'judged_different') AS passed,
       reason,
       CAST(best_similarity AS DOUBLE) AS score,
       CASE WHEN reason = 'skipped' THEN to_json(named_struct('rejected_by', rejected_by))
            WHEN reason = 'no_neighbour' THEN CAST(NULL AS STRING)
            ELSE to_json(named_struct('heldout_id', heldout_id, 'heldout_task', heldout_task,
                                      'heldout_split', heldout_split, 'similarity', similarity,
                                      'retrieved_by', retrieved_by, 'verdict', verdict, 'request_id', request_id,
                                      'neighbours', neighbours)) END AS evidence
FROM decided
