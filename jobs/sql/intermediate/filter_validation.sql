-- filter_validation: is the item well-formed training data?
--   required fields: a known answer format, a question, an answer; lineage: its seed exists in
--     `seeds` and (generated items) its generation request is in the `llm_calls` ledger;
--   choice formats (mcq, boolean, label): ${min_choices}..${max_choices} options, none empty, no two
--     the same after case/space folding; the answer is among the options (mcq: answer_index points
--     at an option whose text is the answer; boolean: a yes/no answer; label: a label of the set);
--     numeric: the answer reads as one number;
--   length bounds (characters): question, context, each option, the answer per format;
--   no leftover template markers or instruction-following artifacts in any field
--     (udfs/validation.py: `{{`, `<|`, `[INST]`, "Question:"/"Answer:" echoes, role labels, ...);
--   none of our own prompt in any field: a fixed sentence of a template or a marker the renderer
--     writes (udfs/prompt_leak.py, derived from udfs/prompts/*.txt: injected or looping output);
--   not a trivial item about itself: a question about the item's own wording, options or answer
--     ("What is the answer to this question?", "Which option is listed first?"), a passage about
--     itself, or an answer that is the question's own text (udfs/self_reference.py).
-- passed = no problem; reason = the first problem (or 'valid'); evidence lists every problem, the
-- first marker text found, the first piece of the prompt found and where the item refers to itself.
WITH lineage AS (
    SELECT c.gen_id,
           s.seed_id IS NOT NULL AS seed_found,
           c.item_kind = 'seed' OR l.request_id IS NOT NULL AS request_found
    FROM stg_candidates c
    LEFT JOIN (SELECT seed_id FROM ${table.seeds}) s ON s.seed_id = c.seed_id
    LEFT JOIN (SELECT DISTINCT request_id FROM ${table.llm_calls} WHERE stage = 'generate') l
        ON l.request_id = c.generation_request_id
),
fields AS (
    SELECT c.*, g.seed_found, g.request_found,
           c.answer_format IN ('mcq', 'boolean', 'label') AS choice_format,
           coalesce(size(c.choices), 0) AS n_choices,
           coalesce(try_element_at(${max_answer_chars}, c.answer_format), 1000) AS max_answer,
           regexp_extract(concat_ws('\n', c.context, c.question, array_join(c.choices, '\n'), c.answer_text),
                          ${template_marker_pattern}, 0) AS marker,
           CASE WHEN c.item_kind = 'generated' THEN prompt_leak(c.question, c.context, c.choices, c.answer_text)
           END AS leak,
           CASE WHEN c.item_kind = 'generated' THEN self_reference(c.question, c.context, c.answer_text)
           END AS self_ref
    FROM stg_candidates c
    JOIN lineage g ON g.gen_id = c.gen_id
),
checked AS (
    SELECT gen_id, marker, leak, self_ref, filter(array(
        CASE WHEN answer_format IS NULL OR NOT array_contains(${answer_formats}, answer_format)
             THEN 'unknown_format' END,
        CASE WHEN trim(coalesce(question, '')) = '' THEN 'missing_question' END,
        CASE WHEN trim(coalesce(answer_text, '')) = '' THEN 'missing_answer' END,
        CASE WHEN NOT seed_found THEN 'missing_seed' END,
        CASE WHEN NOT request_found THEN 'missing_request' END,
        CASE WHEN length(trim(question)) < ${min_question_chars} THEN 'question_too_short' END,
        CASE WHEN length(trim(question)) > ${max_question_chars} THEN 'question_too_long' END,
        CASE WHEN length(trim(context)) > ${max_context_chars} THEN 'context_too_long' END,
        CASE WHEN length(trim(answer_text)) > max_answer THEN 'answer_too_long' END,
        CASE WHEN choice_format AND n_choices < ${min_choices} THEN 'too_few_choices' END,
        CASE WHEN choice_format AND n_choices > ${max_choices} THEN 'too_many_choices' END,
        CASE WHEN choice_format AND exists(choices, x -> trim(coalesce(x, '')) = '') THEN 'empty_choice' END,
        CASE WHEN choice_format
                  AND size(array_distinct(transform(choices, x -> lower(regexp_replace(trim(x), '\\s+', ' ')))))
                      < n_choices
             THEN 'duplicate_choices' END,
        CASE WHEN exists(coalesce(choices, array()), x -> length(trim(x)) > ${max_choice_chars})
             THEN 'choice_too_long' END,
        CASE WHEN answer_format = 'mcq'
                  AND (answer_index IS NULL OR answer_index < 0 OR answer_index >= n_choices
                       OR lower(trim(try_element_at(choices, answer_index + 1))) <> lower(trim(answer_text)))
             THEN 'answer_not_in_choices' END,
        CASE WHEN answer_format IN ('boolean', 'label') AND answer_key IS NULL THEN 'answer_not_in_choices' END,
        CASE WHEN answer_format = 'numeric' AND answer_key IS NULL THEN 'answer_not_a_number' END,
        CASE WHEN marker <> '' THEN 'template_marker' END,
        CASE WHEN leak IS NOT NULL THEN 'prompt_leak' END,
        CASE WHEN self_ref IS NOT NULL THEN 'self_reference' END
    ), p -> p IS NOT NULL) AS problems
    FROM fields
)
SELECT gen_id,
       'validation' AS filter,
       size(problems) = 0 AS passed,
       coalesce(try_element_at(problems, 1), 'valid') AS reason,
       CAST(NULL AS DOUBLE) AS score,
       to_json(named_struct('problems', problems, 'marker', nullif(substr(marker, 1, 80), ''), 'prompt', leak,
                            'self_reference', self_ref))
           AS evidence
FROM checked
