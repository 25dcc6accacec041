-- stg_curated_existing: what `curated` holds before this run (earlier runs, every task), with the
-- dedup_key of each row: a new item that repeats one of them is not new data, and an item already
-- curated is the preferred survivor of its duplicate group (so survivors never flip between runs).
SELECT gen_id, item_kind, task, question, context, choices, agreement,
       sha2(concat_ws('\u001f', normalize_text(context), normalize_text(question), normalize_text(answer_text)), 256)
           AS dedup_key
FROM ${table.curated}
