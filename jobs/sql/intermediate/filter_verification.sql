-- filter_verification: does the majority of the enrichment samples agree with the item's answer?
-- (Self-consistency majority voting, Wang et al. 2022, applied as a filter: an item whose own answer
-- the independent solutions do not reproduce is more likely wrong than the solutions.)
-- Vote counts come from int_votes (NULL final answers and samples that never came back count in the
-- denominator as votes for nothing). Rules, first match wins:
--   freeform / code                       -> passed, 'not_verifiable' (no comparable answer), if at
--                                            least one sample came back, else failed 'no_samples'
--   no sample came back                   -> failed, 'no_samples'
--   the item's own answer has no key      -> failed, 'unreadable_answer'
--   no sample names a valid answer        -> failed, 'no_valid_votes'
--   another answer has as many votes      -> failed, 'tie'
--   another answer has more votes         -> failed, 'majority_disagrees'
--   agreement below the bar               -> failed, 'missing_votes' when the samples that came back
--                                            would have cleared it, else 'below_min_agreement'
--   otherwise                             -> passed, 'majority_agrees'
-- The bar: votes_agree / votes_expected >= the family's threshold, or more than half when it is NULL
-- (strict majority, the default). The threshold: with curate.min_agreement {auto: target}, the one
-- calibration chose for the family (${min_agreement_by_family}, jobs/calibration.py), else
-- ${min_agreement}; its source (config, strict_majority, auto, auto_target_missed, no_calibration)
-- and the target precision go into the evidence. A seed's gold answer is checked the same way
-- (answer-enriched seeds). score = agreement; evidence = the counts and every answer's votes.
WITH thresholds AS (
    SELECT v.*,
           coalesce(try_element_at(from_json(${min_agreement_by_family}, 'map<string,double>'), coalesce(v.family, '')),
                    CAST(${min_agreement} AS DOUBLE)) AS min_agreement,
           coalesce(try_element_at(from_json(${min_agreement_source_by_family}, 'map<string,string>'), coalesce(v.family, '')),
                    ${min_agreement_default_source}) AS min_agreement_source
    FROM int_votes v
),
rules AS (
    SELECT v.*,
           CASE WHEN min_agreement IS NULL THEN votes_agree * 2 > votes_expected
                ELSE votes_agree / votes_expected >= min_agreement END AS clears_bar,
           CASE WHEN min_agreement IS NULL THEN votes_agree * 2 > votes_returned
                ELSE coalesce(try_divide(votes_agree, votes_returned) >= min_agreement, false)
           END AS clears_bar_returned
    FROM thresholds v
),
decided AS (
    SELECT *,
           CASE WHEN answer_format IN ('freeform', 'code') AND votes_returned > 0 THEN 'not_verifiable'
                WHEN votes_returned = 0 THEN 'no_samples'
                WHEN answer_key IS NULL THEN 'unreadable_answer'
                WHEN votes_agree = 0 AND votes_top_other = 0 THEN 'no_valid_votes'
                WHEN votes_agree = votes_top_other THEN 'tie'
                WHEN votes_agree < votes_top_other THEN 'majority_disagrees'
                WHEN NOT clears_bar AND clears_bar_returned THEN 'missing_votes'
                WHEN NOT clears_bar THEN 'below_min_agreement'
                ELSE 'majority_agrees' END AS reason
    FROM rules
)
SELECT gen_id,
       'verification' AS filter,
       reason IN ('majority_agrees', 'not_verifiable') AS passed,
       reason,
       CASE WHEN reason = 'not_verifiable' THEN CAST(NULL AS DOUBLE) ELSE agreement END AS score,
       to_json(named_struct(
           'answer', answer_key, 'agree', votes_agree, 'top_other', votes_top_other,
           'returned', votes_returned, 'null_votes', votes_null, 'expected', votes_expected,
           'min_agreement', min_agreement, 'min_agreement_source', min_agreement_source,
           'target_precision', CAST(${target_precision} AS DOUBLE), 'votes', vote_counts)) AS evidence
FROM decided
