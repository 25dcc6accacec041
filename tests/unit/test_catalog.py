"""Catalog logic without Spark: answer-format classification on lm-eval's real task configs,
include-chain resolution of user YAMLs, selection of groups/tags, eligibility, licenses."""


import pytest

from jobs.catalog import (
    CatalogResult,
    build_task_index,
    catalog_rows,
    classify_answer_format,
    family_summary,
    resolve_selection,
    template_text,
    unloadable_task_yamls,
)
from jobs.config import load_config
from schemas.licenses import license_for, load_policy, parse_policy


@pytest.fixture(scope="session")
def lm_eval_index(task_index):
    return task_index


@pytest.fixture(scope="session")
def lm_eval_rows(lm_eval_index):
    return {row["task"]: row for row in catalog_rows(lm_eval_index, load_config())}


@pytest.mark.parametrize(
    "task, expected",
    [
        ("arc_easy", "mcq"),
        ("arc_challenge", "mcq"),
        ("mmlu_anatomy", "mcq"),          # letter choices, options in the prompt
        ("winogrande", "mcq"),            # two fillers for one blank
        ("hellaswag", "mcq"),
        ("boolq", "boolean"),
        ("anli_r1", "label"),             # True / Neither / False
        ("gsm8k", "numeric"),
        ("webqs", "short_text"),          # lm-eval scores it as MC over aliases
        ("nq_open", "short_text"),
        ("triviaqa", "short_text"),
        ("wikitext", "freeform"),
        ("mbpp", "code"),
    ],
)
def test_answer_format_of_real_lm_eval_tasks(lm_eval_rows, task, expected):
    assert lm_eval_rows[task]["answer_format"] == expected


@pytest.mark.parametrize(
    "cfg, expected",
    [
        ({"output_type": "multiple_choice", "doc_to_choice": ["no", "sí"]}, "boolean"),
        ({"output_type": "multiple_choice", "doc_to_choice": ["False", "True"]}, "boolean"),
        ({"output_type": "multiple_choice", "doc_to_choice": ["(A)", "(B)", "(C)"]}, "mcq"),
        ({"output_type": "multiple_choice", "doc_to_choice": ["negative", "positive"]}, "label"),
        ({"output_type": "multiple_choice", "doc_to_choice": "{{choices.text}}"}, "mcq"),
        ({"output_type": "generate_until", "metric_list": [{"metric": "bleu"}]}, "freeform"),
        ({"output_type": "generate_until", "metric_list": [{"metric": "exact_match"}],
          "filter_list": [{"filter": [{"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.]+)"}]}]}, "numeric"),
        ({"output_type": "generate_until", "metric_list": [{"metric": "exact_match"}]}, "short_text"),
        ({"metric_list": [{"metric": "pass@1"}]}, "code"),
        ({"output_type": "loglikelihood_rolling"}, "freeform"),
    ],
)
def test_answer_format_rules(cfg, expected):
    assert classify_answer_format("some_task", "some_family", cfg) == expected


def test_registry_has_the_reference_scale(lm_eval_rows):
    rows = list(lm_eval_rows.values())
    eligible = [r for r in rows if r["eligible"]]
    assert len(eligible) >= 600
    assert len({r["family"] for r in eligible}) >= 80
    ineligible = [r for r in rows if not r["eligible"]]
    assert ineligible and all(r["ineligible_reason"] for r in ineligible)
    assert lm_eval_rows["mmlu_anatomy"]["eligible"] is False
    assert "training split" in lm_eval_rows["mmlu_anatomy"]["ineligible_reason"]
    assert lm_eval_rows["wikitext"]["eligible"] is False  # corpus, not Q&A
    summary = {family: (total, n) for family, total, n, _ in family_summary(rows)}
    assert summary["arc"][1] >= 2 and summary["gsm8k"][1] >= 1


def test_function_templates_are_stored_as_readable_references(lm_eval_rows):
    winogrande = lm_eval_rows["winogrande"]
    assert winogrande["doc_to_text"] == "!function winogrande/preprocess_winogrande.doc_to_text"
    assert lm_eval_rows["arc_easy"]["doc_to_choice"] == "{{choices.text}}"
    assert lm_eval_rows["boolq"]["doc_to_choice"] == '["no", "yes"]'
    assert template_text(None) is None


def test_groups_and_tags_expand_to_leaf_tasks(lm_eval_index):
    tasks, unknown = resolve_selection(lm_eval_index, ["ai2_arc", "gsm8k", "no_such_task"])
    assert set(tasks) == {"arc_easy", "arc_challenge", "gsm8k"}
    assert unknown == ["no_such_task"]
    mmlu, _ = resolve_selection(lm_eval_index, ["mmlu"])
    assert len(mmlu) == 57 and "mmlu_anatomy" in mmlu


def test_licenses_come_from_the_policy_with_sources_and_unknown_is_never_guessed(lm_eval_rows):
    policy = load_policy()
    assert len(policy) == 136
    assert all(entry.license_class for entry in policy.values())
    arc = license_for("allenai/ai2_arc")
    assert arc.license_class == "share-alike" and arc.source_url.startswith("https://")
    assert license_for("not/a-dataset").license_class == "unknown"
    assert lm_eval_rows["arc_easy"]["license"] == arc.license
    with pytest.raises(ValueError, match="unknown class"):
        parse_policy("dataset_path\tlicense\tlicense_class\tcommercial_ok\tlm_eval_task_dirs\tsource_url\tnote\n"
                     "x/y\tmit\tfreeish\tyes\t\t\t\n")


def test_user_task_yaml_include_chain_is_resolved(tmp_path):
    base = tmp_path / "my_family"
    base.mkdir()
    (base / "_root.yaml").write_text(
        "dataset_path: my-org/my-data\noutput_type: multiple_choice\n"
        "doc_to_choice: ['no', 'yes']\ndoc_to_target: label\n"
    )
    (base / "_middle.yaml").write_text("include: _root.yaml\ntraining_split: train\nvalidation_split: dev\n")
    (base / "my_task.yaml").write_text(
        "include: _middle.yaml\ntask: my_task\ndataset_name: v2\ndoc_to_text: '{{q}}'\n"
    )
    (base / "held_only.yaml").write_text("include: _root.yaml\ntask: held_only\ntest_split: test\n")
    index = build_task_index([tmp_path], include_defaults=False)
    rows = {r["task"]: r for r in catalog_rows(index, load_config())}
    mine = rows["my_task"]
    assert (mine["dataset_path"], mine["dataset_name"], mine["training_split"]) == ("my-org/my-data", "v2", "train")
    assert mine["answer_format"] == "boolean"
    assert mine["family"] == "my_family"
    assert mine["eligible"] and mine["license_class"] == "unknown"
    assert rows["held_only"]["eligible"] is False


GOOD_TASK = ("task: my_good_task\ndataset_path: openai/gsm8k\ndataset_name: main\noutput_type: generate_until\n"
             "training_split: train\ntest_split: test\ndoc_to_text: '{{question}}'\ndoc_to_target: '{{answer}}'\n")


@pytest.mark.parametrize("text, says", [
    ("task: broken\ndataset_path: [unclosed\n  doc_to_text: : :\n", "ParserError"),            # YAML syntax
    ("task: tabbed\n\tdataset_path: x\n", "Error"),                                          # a tab indent
    ("include: nowhere.yaml\ntask: lost_include\n", "nowhere.yaml"),                        # include not found
    ("include: bad.yaml\ntask: cyclic\n", "Include cycle"),                                 # includes itself
    ("- task: a list\n- not a mapping\n", "Expected YAML dict"),                            # not a mapping
    (b"task: latin1\ndoc_to_text: '\xe9t\xe9'\n", "Error"),                                  # not UTF-8
])
def test_a_user_task_yaml_lm_eval_cannot_load_is_named_with_its_reason(tmp_path, text, says):
    """lm-eval's index drops such a file with a debug log only; the catalog names it and why, the
    good task next to it is indexed, and ingest's 'unknown task' says which YAMLs failed."""
    (tmp_path / "good.yaml").write_text(GOOD_TASK)
    bad = tmp_path / "bad.yaml"
    (bad.write_bytes if isinstance(text, bytes) else bad.write_text)(text)
    index = build_task_index([tmp_path], include_defaults=False)
    assert "my_good_task" in index.tasks
    assert list(index.unloadable) == [str(bad)] and says in index.unloadable[str(bad)]
    assert "\n" not in index.unloadable[str(bad)] and len(index.unloadable[str(bad)]) <= 300
    lines = CatalogResult(catalog_rows(index, load_config()), unloadable=index.unloadable).summary_lines()
    assert f"skipped user task YAML {bad}: {index.unloadable[str(bad)]}" in lines
    assert unloadable_task_yamls([tmp_path]) == index.unloadable  # without the index: the loader's errors


def test_templates_without_a_task_are_not_reported(tmp_path):
    (tmp_path / "_template.yaml").write_text("dataset_path: openai/gsm8k\noutput_type: generate_until\n")
    (tmp_path / "good.yaml").write_text(GOOD_TASK)
    assert build_task_index([tmp_path], include_defaults=False).unloadable == {}


def test_config_overrides_change_the_catalog_row(lm_eval_index):
    config = load_config(overrides=["tasks.overrides={winogrande: {dataset_name: winogrande_l}}"])
    rows = {r["task"]: r for r in catalog_rows(lm_eval_index, config)}
    assert rows["winogrande"]["dataset_name"] == "winogrande_l"


def test_missing_include_folder_is_a_clear_error(tmp_path):
    from jobs.config import ConfigError

    with pytest.raises(ConfigError, match="include_path"):
        build_task_index([tmp_path / "missing"])
