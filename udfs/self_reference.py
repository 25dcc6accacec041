"""`self_reference`: a trivial item about itself — its question asks about the item, the prompt or
the task (its wording, its options, its own answer) rather than about the world or the passage, or
its answer is read off the question's own text.

Where the rule comes from: issue 29 (a small real model, asked for a new item like a seed, writes
items with no content; the simulator's `self_reference_rate` fault plants such items, shapes in
docs/prompt-contract.md) and the property that makes an item training data at all: what it asks must
be about something. "What is the answer to this question?", "Which option is listed first?", "Is
this statement a question?", "How many words are in this sentence?" carry no knowledge, and their
answer is decided by their own wording.

The rule reads words, after `udfs.textnorm.normalize_text` (case, accents, punctuation folded: the
comparison form of every curation rule), against closed vocabularies in English, German, French,
Spanish, Italian and Portuguese (`VOCABULARY`), a text in each language on its own (German "war" is
a function word, English "war" is not). Classes:
- `function`: closed-class words (articles, pronouns, prepositions, auxiliaries, question words,
  conjunctions, quantifiers, "following", "below", "these": pointers at the options, as MCQ frames
  use them) — they say nothing by themselves;
- `item`: the parts of an item and its prompt ("question", "statement", "sentence", "option",
  "choice", "answer", "task", "prompt", "blank" ...);
- `carrier`: what carries an item's content ("passage", "text", "paragraph");
- `layout`: positions in the item ("first", "last", "listed", "order", "position" ...);
- `shape`: properties of wording ("word", "letter", "vowel", "written", "begins", "length",
  "language", "punctuation" ...);
- `verdict`: "true", "false", "correct", "best" ... — a judgement of whatever is named;
- `deixis`: "this", "itself" (diese, cette, esta, questa, este ...).
Every other word — a noun, a verb, a name, a number — is a content word.

A text is self-referential (`is_self_referential`) when, in some language, it has no content word
and (a) a deixis word stands right before an item word ("this question", "cette phrase") or it says
"itself", or (b) it names an item part with a layout word ("Which option is listed first?"), or (c)
a deixis word stands right before a carrier word and the text asks about shape or layout, not a
verdict ("How many words are in this passage?"). So the frames of reading and MCQ tasks, whose
content is in the passage and the options, pass: "Which is true?", "Which of the following
statements is correct?", "Which one of the statements below is false?", "In this passage, which
statement is true?"; and a question about words of the world ("does a word have to have a vowel",
BoolQ) has no deixis and no layout, so it passes too. The item fails (`self_reference_decision`)
when:
1. its question is self-referential (`question`), or
2. its passage is (`passage`: "This passage is the passage of this question."), or
3. its question points at itself (a) and its answer contains the question's whole text
   (`answer_from_question`: "Write a function that returns this question." answered by a function
   returning it). A real question often contains its answer (WinoGrande's options are in its
   sentence, MMLU quotes its sources), so the answer being *in* the question is no evidence.

Measured on every record of the benchmark mirror (/work/shared/data/hf; it has no SocialIQA or
HellaSwag): ARC-Easy, ARC-Challenge, BoolQ (question and passage), GSM8K, WinoGrande, WebQuestions
train; MMLU, all subjects and splits; SciQ (with its support passage), NQ-open and PIQA validation:
56,588 records, none flagged (tests/unit/test_self_reference.py counts them; the first draft, with
orthography words as layout and "below"/"these" as deixis, flagged 3 BoolQ questions about vowels
and 1 MMLU "statements below"). Pure; safe in executors.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

from udfs.textnorm import normalize_text

SELF_REFERENCE = "self_reference"
NOT_SELF_REFERENTIAL = "about_content"

FUNCTION, ITEM, CARRIER, LAYOUT, SHAPE, VERDICT, DEIXIS = (
    "function", "item", "carrier", "layout", "shape", "verdict", "deixis")

# Per language and class, the words in their normalized form (lower case, no accents: what
# `normalize_text` makes of them). A word may sit in two classes of one language (Spanish "esta" is
# "this" and "is").
VOCABULARY: dict[str, dict[str, str]] = {
    "en": {
        FUNCTION: "a an the of to in on at by for from with about into onto as and or nor but not no yes if "
                  "then than so is are was were be been being am do does did done has have had having can "
                  "could will would shall should may might must what which who whom whose when where why how "
                  "many much it its they them their there that those these one ones any some all each every "
                  "both either neither other another following followed below above given shown provided "
                  "say says said called named among between out up down only just also very most more less",
        ITEM: "question questions item items task tasks prompt prompts statement statements sentence sentences "
              "option options choice choices answer answers blank blanks quiz exercise title label labels query",
        CARRIER: "passage passages text texts paragraph paragraphs",
        LAYOUT: "first second third fourth last final next previous listed order position top bottom",
        SHAPE: "word words letter letters character characters line lines vowel vowels consonant consonants "
               "syllable syllables written spelled spell begin begins beginning start starts end ends ending "
               "contain contains length long longest short shortest number count language english "
               "alphabetical alphabetically mark marks punctuation capital capitalized uppercase lowercase "
               "appear appears mentioned asked asking ask",
        VERDICT: "true false correct incorrect right wrong best worst valid",
        DEIXIS: "this itself",
    },
    "de": {
        FUNCTION: "der die das den dem des ein eine einer eines einem einen und oder aber nicht kein keine "
                  "ja nein ist sind war waren sein wird werden wurde hat haben hatte kann koennen welche "
                  "welcher welches was wer wie viele viel wo wann warum es sie er in im an am auf aus bei mit "
                  "von vom zu zum zur fur fuer uber ueber als nach vor folgenden folgende gegeben unten oben",
        ITEM: "frage fragen aufgabe aufgaben aussage aussagen satz satze saetze option optionen antwort "
              "antworten auswahl antwortmoglichkeit antwortmoglichkeiten",
        CARRIER: "text texte absatz abschnitt",
        LAYOUT: "erste ersten erster erstes zweite zweiten letzte letzten letzter aufgefuhrt aufgefuehrt "
                "genannt reihenfolge position",
        SHAPE: "wort worter woerter buchstabe buchstaben zeichen zeile zeilen geschrieben beginnt endet "
               "enthalt enthaelt lange lang kurz anzahl sprache deutsch gestellt",
        VERDICT: "wahr falsch richtig korrekt beste",
        DEIXIS: "diese dieser dieses diesem diesen selbst",
    },
    "fr": {
        FUNCTION: "le la les l un une des du de d et ou mais ne pas non oui est sont etait etre a ont avait "
                  "peut quel quelle quels quelles que qu qui quoi comment combien quand pourquoi il elle "
                  "ils elles en dans sur au aux par pour avec sans se y suivant suivante suivants suivantes "
                  "donne donnee ci dessous dessus",
        ITEM: "question questions tache taches consigne enonce affirmation phrase phrases option options choix "
              "reponse reponses",
        CARRIER: "texte textes paragraphe passage",
        LAYOUT: "premier premiere premiers deuxieme second seconde dernier derniere listee liste ordre position",
        SHAPE: "mot mots lettre lettres caractere caracteres ligne lignes ecrit ecrite commence commencent "
               "finit termine contient longueur long longue court nombre langue francais mentionne posee",
        VERDICT: "vrai vraie faux fausse correct correcte juste meilleur meilleure",
        DEIXIS: "ce cet cette elle meme",
    },
    "es": {
        FUNCTION: "el la los las lo un una unos unas de del al y o pero no si es son era fue ser esta estan "
                  "ha han tiene puede cual cuales que quien como cuantos cuantas cuanto donde cuando por "
                  "porque en con sin para se siguiente siguientes dado dada abajo arriba",
        ITEM: "pregunta preguntas tarea tareas enunciado afirmacion oracion frase frases opcion opciones "
              "respuesta respuestas",
        CARRIER: "texto textos parrafo pasaje",
        LAYOUT: "primera primero primer segunda segundo ultima ultimo listada listado orden posicion",
        SHAPE: "palabra palabras letra letras caracter caracteres linea lineas escrita escrito empieza comienza "
               "termina contiene longitud largo larga corta corto numero idioma espanol mencionada aparece",
        VERDICT: "verdadero verdadera falso falsa correcta correcto mejor",
        DEIXIS: "este esta esto misma mismo",
    },
    "it": {
        FUNCTION: "il lo la i gli le un uno una a al alla di del della dei delle e o ma non no si sono era essere ha "
                  "hanno puo quale quali che chi come quanti quante quanto dove quando perche in nel nella "
                  "con per su da seguente seguenti dato data sotto sopra qual cosa",
        ITEM: "domanda domande compito compiti affermazione frase frasi opzione opzioni scelta risposta risposte",
        CARRIER: "testo testi paragrafo brano",
        LAYOUT: "prima primo seconda secondo ultima ultimo elencata elencato ordine posizione",
        SHAPE: "parola parole lettera lettere carattere caratteri riga righe scritta scritto inizia comincia "
               "finisce termina contiene lunghezza lungo lunga corta corto numero lingua italiano",
        VERDICT: "vero vera falso falsa corretta corretto giusta giusto migliore",
        DEIXIS: "questo questa quest stessa stesso",
    },
    "pt": {
        FUNCTION: "o a os as um uma uns umas de do da dos das e ou mas nao sim sao era ser esta estao tem "
                  "pode qual quais que quem como quantos quantas quanto onde quando porque em no na com sem "
                  "para por se seguinte seguintes dado dada acima abaixo",
        ITEM: "pergunta perguntas tarefa tarefas afirmacao frase frases opcao opcoes resposta respostas",
        CARRIER: "texto textos paragrafo passagem",
        LAYOUT: "primeira primeiro segunda segundo ultima ultimo listada listado ordem posicao",
        SHAPE: "palavra palavras letra letras caractere caracteres linha linhas escrita escrito comeca termina "
               "contem comprimento longo longa curta curto numero idioma portugues",
        VERDICT: "verdadeiro verdadeira falso falsa correta correto certa certo melhor",
        DEIXIS: "este esta isto desta deste nesta neste mesma mesmo",
    },
}


_REFLEXIVE = frozenset({"itself"})


@lru_cache(maxsize=1)
def word_classes() -> dict[str, dict[str, frozenset[str]]]:
    """Per language, its vocabulary words by class, normalized."""
    return {lang: {cls: frozenset(normalize_text(words).split()) for cls, words in classes.items()}
            for lang, classes in VOCABULARY.items()}


@dataclass(frozen=True)
class Reading:
    """How one text reads in one language: its content words (in no vocabulary class of that
    language), the classes it uses, and whether a deixis word stands right before an item word
    ("this question") or a carrier word ("this passage")."""

    language: str
    content: tuple[str, ...]
    classes: frozenset[str]
    points_at_item: bool = False
    points_at_carrier: bool = False

    @property
    def self_referential(self) -> bool:
        if self.content:
            return False
        return (self.points_at_item
                or (ITEM in self.classes and LAYOUT in self.classes)
                or (self.points_at_carrier and bool({SHAPE, LAYOUT} & self.classes) and VERDICT not in self.classes))


def read_text(text: Any, language: str) -> Reading:
    """The `Reading` of one text in one language of `VOCABULARY` (None and "" read as no words).
    A text is read in each language on its own: German "war" is a function word, English "war" is not."""
    return _read(normalize_text(text).split(), language)


def _read(words: list[str], language: str) -> Reading:
    vocab = word_classes()[language]
    content: list[str] = []
    used: set[str] = set()
    item = carrier = False
    previous: set[str] = set()
    for word in words:
        hit = {c for c, words in vocab.items() if word in words}
        if hit:
            used |= hit
        else:
            content.append(word)
        item = item or (DEIXIS in previous and ITEM in hit) or (DEIXIS in hit and word in _REFLEXIVE)
        carrier = carrier or (DEIXIS in previous and CARRIER in hit)
        previous = hit
    return Reading(language, tuple(content), frozenset(used), item, carrier)


def readings(text: Any) -> list[Reading]:
    """The text's `Reading` in every language of `VOCABULARY`."""
    words = normalize_text(text).split()
    return [_read(words, lang) for lang in VOCABULARY]


@lru_cache(maxsize=1)
def _vocabulary_words() -> dict[str, frozenset[str]]:
    return {lang: frozenset().union(*classes.values()) for lang, classes in word_classes().items()}


def is_self_referential(text: Any) -> bool:
    """Whether, in some language, a text has no content word and asks about form or points at
    itself (module docstring). A language in which some word is content is not read further."""
    words = normalize_text(text).split()
    known = _vocabulary_words()
    return any(_read(words, lang).self_referential for lang in VOCABULARY
               if all(w in known[lang] for w in words))


def points_at_itself(text: Any) -> bool:
    """Whether, in some language, a text points at the item itself: a deixis word right before an
    item word ("this question", "cette phrase", "diese Frage") or "itself"."""
    return any(r.points_at_item for r in readings(text))


def _contains_words(haystack: str, needle: str) -> bool:
    return bool(needle) and f" {needle} " in f" {haystack} "


def answer_from_question(question: Any, answer: Any) -> bool:
    """Whether a question that points at itself ("this question", "esta pregunta") is answered
    with itself: its normalized text is a whole-word part of the normalized answer ("Write a
    function that returns this question." answered by a function returning that text)."""
    q, a = normalize_text(question), normalize_text(answer)
    return bool(q) and _contains_words(a, q) and points_at_itself(question)


@dataclass(frozen=True)
class SelfReferenceDecision:
    """The verdict on one item: `passed`, `reason` (`self_reference` or `about_content`) and `where`
    (which rule fired: 'question', 'passage' or 'answer_from_question'; None when it passes)."""

    passed: bool
    reason: str
    where: str | None = None


def self_reference_decision(item: Mapping[str, Any]) -> SelfReferenceDecision:
    """The rule for one item (`question`, `context`, `answer_text`); see the module docstring."""
    question = item.get("question")
    if is_self_referential(question):
        return SelfReferenceDecision(False, SELF_REFERENCE, "question")
    context = item.get("context")
    if context is not None and str(context).strip() and is_self_referential(context):
        return SelfReferenceDecision(False, SELF_REFERENCE, "passage")
    if answer_from_question(question, item.get("answer_text")):
        return SelfReferenceDecision(False, SELF_REFERENCE, "answer_from_question")
    return SelfReferenceDecision(True, NOT_SELF_REFERENTIAL)
