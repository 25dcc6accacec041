-- curated_commercial: the rows of `curated` that also passed every filter gating the commercial subset
-- (the license filter): their license policy allows commercial training.
SELECT cu.*
FROM curated cu
LEFT ANTI JOIN (SELECT DISTINCT gen_id FROM int_filter_decisions WHERE gate = 'commercial' AND NOT passed) f
    ON f.gen_id = cu.gen_id
