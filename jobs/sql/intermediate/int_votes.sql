-- int_votes: the majority vote of each candidate's enrichment samples against its own answer.
--   votes_returned  samples that came back (a row in `enriched`)
--   votes_null      of those, samples whose final answer names no valid answer (a vote for nothing)
--   votes_expected  greatest(votes_returned, enrich.samples_per_item): a sample that never came back
--                   (failed call, unparsable response) counts like a vote for nothing, so two of
--                   four agreeing samples are not a majority because two others were lost
--   votes_agree     samples whose key equals the item's answer_key
--   votes_top_other the largest number of samples agreeing on one *other* answer
--   agreement       votes_agree / votes_expected
--   vote_counts     [{answer, votes}] per distinct sample answer key, sorted (evidence)
--   family          coalesce(task_family, task): the unit of calibration (per-family thresholds)
WITH per_answer AS (
    SELECT gen_id, sample_key, count(*) AS votes
    FROM stg_enrichment_samples
    WHERE sample_key IS NOT NULL
    GROUP BY gen_id, sample_key
),
returned AS (
    SELECT gen_id, count(*) AS votes_returned, count_if(sample_key IS NULL) AS votes_null
    FROM stg_enrichment_samples
    GROUP BY gen_id
),
tallied AS (
    SELECT c.gen_id, c.answer_format, c.answer_key, coalesce(c.task_family, c.task) AS family,
           coalesce(first(r.votes_returned, true), 0) AS votes_returned,
           coalesce(first(r.votes_null, true), 0) AS votes_null,
           coalesce(max(CASE WHEN p.sample_key = c.answer_key THEN p.votes END), 0) AS votes_agree,
           coalesce(max(CASE WHEN c.answer_key IS NULL OR p.sample_key <> c.answer_key THEN p.votes END), 0)
               AS votes_top_other,
           array_sort(collect_list(CASE WHEN p.sample_key IS NOT NULL
                                        THEN named_struct('answer', p.sample_key, 'votes', p.votes) END))
               AS vote_counts
    FROM stg_candidates c
    LEFT JOIN returned r ON r.gen_id = c.gen_id
    LEFT JOIN per_answer p ON p.gen_id = c.gen_id
    GROUP BY c.gen_id, c.answer_format, c.answer_key, coalesce(c.task_family, c.task)
)
SELECT gen_id, answer_format, answer_key, votes_returned, votes_null,
       CAST(greatest(votes_returned, ${samples_per_item}) AS INT) AS votes_expected,
       CAST(votes_agree AS INT) AS votes_agree, CAST(votes_top_other AS INT) AS votes_top_other,
       votes_agree / greatest(votes_returned, ${samples_per_item}) AS agreement,
       vote_counts, family
FROM tallied
