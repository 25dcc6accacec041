-- stg_seed_keys: every seed's dedup_key (same recipe as stg_candidates.dedup_key), for the exact
-- duplicate check against the training data of every task (a copy of a training item is not new data).
SELECT seed_id, task,
       sha2(concat_ws('\u001f', normalize_text(context), normalize_text(question), normalize_text(answer_text)), 256)
           AS dedup_key
FROM ${table.seeds}
