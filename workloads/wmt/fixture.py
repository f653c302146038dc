"""A small WMT de-en release for tests: the release's archives (plain parallel text for the train
corpora and newstest2013, SGM for newstest2013 and newstest2014, with the release's file names
and a few files of other language pairs beside them), run through `workloads.wmt.prepare` with a
tiny SentencePiece model trained in-process.

The sentences are word-for-word translations over a small German-English dictionary (so a tiny
model can learn something), with the release's quirks: pairs with an empty side (left out), a
"\\r" inside a sentence, characters beyond ASCII, a train file without a final newline, and one
pair too long for 256 ids in train and in validation (dropped). With `PIPELINE_OPTIONS` (rows of
64 ids) the prepared fixture serves `SIZES` pairs per split.
"""

from __future__ import annotations

import io
import pathlib
import tarfile

import numpy as np

from algoperf.workloads.wmt import prepare

DICTIONARY = (
    "der:the die:the das:the ein:a eine:an und:and oder:or aber:but nicht:not auch:also "
    "sehr:very heute:today morgen:tomorrow hier:here dort:there immer:always nie:never "
    "Haus:house Stadt:city Land:country Straße:street Brücke:bridge Fluss:river Berg:mountain "
    "Wasser:water Feuer:fire Licht:light Nacht:night Tag:day Jahr:year Woche:week Zeit:time "
    "Mann:man Frau:woman Kind:child Lehrer:teacher Schüler:student Arzt:doctor Bauer:farmer "
    "Regierung:government Parlament:parliament Kommission:commission Bericht:report "
    "Vorschlag:proposal Frage:question Antwort:answer Problem:problem Lösung:solution "
    "Markt:market Preis:price Geld:money Arbeit:work Wirtschaft:economy Handel:trade "
    "Umwelt:environment Energie:energy Klima:climate Wetter:weather Sonne:sun Mond:moon "
    "groß:big klein:small alt:old neu:new gut:good schlecht:bad schnell:fast langsam:slow "
    "grün:green blau:blue rot:red weiß:white schwarz:black schön:beautiful wichtig:important "
    "sieht:sees hat:has ist:is wird:becomes macht:makes bringt:brings kauft:buys baut:builds "
    "liest:reads schreibt:writes sagt:says fragt:asks hilft:helps öffnet:opens schließt:closes "
    "über:over unter:under neben:beside zwischen:between ohne:without für:for gegen:against "
    "Europa:Europe Deutschland:Germany Berlin:Berlin München:Munich Zürich:Zurich Köln:Cologne"
)
GERMAN, ENGLISH = zip(*(entry.split(":") for entry in DICTIONARY.split()))
TOKENIZER_VOCAB = 256
"""The tiny SentencePiece model's pieces."""
MAX_TRAINING_BYTES = 6_000
"""The tokenizer trains on the first ~6 kB of the train pairs in its fixed order (58 of the 177
pairs: the long one among them takes it past 8 kB), as the real one trains on the first ~1e7
bytes."""
MAX_LEN = 64
PIPELINE_OPTIONS = {"max_len": MAX_LEN, "vocab_size": TOKENIZER_VOCAB}

TRAIN_LINES = {"europarl_v7": 60, "commoncrawl": 50, "newscommentary_v12": 30, "rapid_2016": 40}
"""Line pairs per train corpus, empty sides and the long pair included."""
EMPTY = {"europarl_v7": (3, 17), "commoncrawl": (8,)}
"""Which line pairs have an empty side (left out by prepare)."""
LONG_WORDS = 320
"""Words in the long sentences (far more than 256 ids with the tiny tokenizer)."""
RAW_COUNTS = {
    "train": sum(TRAIN_LINES.values()) - sum(len(v) for v in EMPTY.values()),
    "validation": 24,
    "test": 21,
}
"""Pairs with both sides non-empty: prepare's `expected_counts` for the fixture."""
SIZES = {"train": RAW_COUNTS["train"] - 1, "validation": RAW_COUNTS["validation"] - 1, "test": 21}
"""Pairs per split after the 256-id filter (one long pair in train, one in validation), all of
them within 64 ids: what the pipeline serves with PIPELINE_OPTIONS."""


def sentence_pair(rng: np.random.Generator, words: int) -> tuple[str, str]:
    """A German sentence and its word-for-word English translation."""
    chosen = rng.integers(0, len(GERMAN), words)
    german = " ".join(GERMAN[i] for i in chosen)
    english = " ".join(ENGLISH[i] for i in chosen)
    ending = str(rng.choice([".", ".", "!", "?"]))
    return german[0].upper() + german[1:] + ending, english[0].upper() + english[1:] + ending


def corpus(count: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    return [sentence_pair(rng, int(rng.integers(3, 10))) for _ in range(count)]


def train_corpora(seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """Each train corpus's line pairs (empty sides included), in file order."""
    rng = np.random.default_rng(seed)
    corpora = {name: corpus(count, rng) for name, count in TRAIN_LINES.items()}
    for name, lines in EMPTY.items():
        for number, line in enumerate(lines):
            german, english = corpora[name][line]
            corpora[name][line] = ("", english) if number % 2 == 0 else (german, "")
    crawl = corpora["commoncrawl"]
    crawl[5] = ("Preis: 10 € – „günstig“\rheute.", "Price: 10 € – “cheap”\rtoday.")
    crawl[20] = sentence_pair(rng, LONG_WORDS)
    return corpora


def eval_sets(seed: int = 1) -> dict[str, list[tuple[str, str]]]:
    """newstest2013 (validation, with one long pair) and newstest2014 (test)."""
    rng = np.random.default_rng(seed)
    validation = corpus(RAW_COUNTS["validation"], rng)
    validation[11] = sentence_pair(rng, LONG_WORDS)
    validation[2] = ("Die Kommission sagt: „Ja & nein“.", 'The commission says: "yes & no".')
    return {"validation": validation, "test": corpus(RAW_COUNTS["test"], rng)}


def plain(sentences: list[str], final_newline: bool = True) -> bytes:
    return ("\n".join(sentences) + ("\n" if final_newline else "")).encode("utf-8")


def sgm(sentences: list[str], set_id: str, language: str, kind: str) -> bytes:
    """The release's SGM layout: documents of paragraphs of `<seg id="n">` lines."""
    tag = "srcset" if kind == "src" else "refset"
    lines = [f'<{tag} setid="{set_id}" srclang="any" trglang="{language}">']
    for start in range(0, len(sentences), 8):  # documents of 8 sentences
        lines.append(f'<doc sysid="{kind}" docid="doc{start}" genre="news" origlang="de">')
        lines.append("<p>")
        for number in range(start, min(start + 8, len(sentences))):
            lines.append(f'<seg id="{number - start + 1}">{sentences[number]}</seg>')
        lines.append("</p>")
        lines.append("</doc>")
    lines.append(f"</{tag}>")
    return plain(lines)


def write_tgz(path: pathlib.Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            member = tarfile.TarInfo(name)
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))


def release_members(seed: int = 0) -> dict[str, dict[str, bytes]]:
    """{archive: {member path: bytes}}, laid out as the release's archives are."""
    corpora, evals = train_corpora(seed), eval_sets(seed + 1)
    members: dict[str, dict[str, bytes]] = {}
    prefixes = {"europarl_v7": "training/", "newscommentary_v12": "training/"}
    for source in prepare.TRAIN_SOURCES:
        german, english = zip(*corpora[source.name])
        final = source.name != "newscommentary_v12"  # a file without a final newline
        de_name, en_name = source.files[0]
        prefix = prefixes.get(source.name, "")
        members[source.archive] = {
            f"{prefix}{de_name}": plain(list(german), final),
            f"{prefix}{en_name}": plain(list(english), final),
        }
    members["training-parallel-europarl-v7.tgz"]["training/europarl-v7.fr-en.fr"] = plain(
        ["Une autre paire de langues."]
    )
    validation_de, validation_en = (list(side) for side in zip(*evals["validation"]))
    test_de, test_en = (list(side) for side in zip(*evals["test"]))
    members["dev.tgz"] = {
        "dev/newstest2012.de": plain(["Ein anderes Jahr."]),
        "dev/newstest2013.de": plain(validation_de),
        "dev/newstest2013.en": plain(validation_en),
        "dev/newstest2013-src.de.sgm": sgm(validation_de, "newstest2013", "de", "src"),
        "dev/newstest2013-ref.en.sgm": sgm(validation_en, "newstest2013", "en", "ref"),
        "dev/newstest2014-deen-src.de.sgm": sgm(test_de, "newstest2014", "de", "src"),
        "dev/newstest2014-deen-ref.en.sgm": sgm(test_en, "newstest2014", "en", "ref"),
    }
    return members


def write_release(folder: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """The release's five archives in `folder` (the --archive_dir); returns `folder`."""
    for archive, members in release_members(seed).items():
        write_tgz(folder / archive, members)
    return folder


def prepare_kwargs() -> dict:
    """prepare's arguments for the fixture release (its counts, the tiny tokenizer)."""
    return {
        "expected_counts": RAW_COUNTS,
        "vocab_size": TOKENIZER_VOCAB,
        "max_training_bytes": MAX_TRAINING_BYTES,
        "num_threads": 1,
        "allow_download": False,
        "log": lambda line: None,
    }


def write_fixture(folder: pathlib.Path) -> pathlib.Path:
    """The prepared fixture (archives in `folder/archives`, run through `prepare`, which trains
    the tiny tokenizer); returns the --data_dir. Use the pipeline with `PIPELINE_OPTIONS`."""
    archives = write_release(folder / "archives")
    prepare.prepare(folder, str(archives), **prepare_kwargs())
    return folder
