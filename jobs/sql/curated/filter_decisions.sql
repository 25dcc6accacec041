-- filter_decisions: every filter's decision on every candidate item, with the item's task and task
-- family, so "rejections per filter per task family" needs this table alone. run_id and decided_at
-- are not change columns: a rerun that decides the same thing commits nothing.
SELECT d.gen_id, d.filter, d.passed, d.reason, d.score, d.evidence,
       c.item_kind, c.task, c.task_family,
       ${run_id} AS run_id, current_timestamp() AS decided_at
FROM int_filter_decisions d
JOIN stg_candidates c ON c.gen_id = d.gen_id
