import gzip

import datasets
import pytest

from nmt.data.corpus import (
    HFCorpus,
    TextCorpus,
    TsvCorpus,
    count_lines,
    detect_format,
    open_corpus,
    read_lines,
)
from nmt.errors import NmtError
from tests.conftest import write_tsv

PAIRS = [("Hola mundo.", "Hello world."), ("Buenos días", "Good morning"), ("", "Empty source")]


def test_tsv_reads_named_columns_in_any_order(tmp_path):
    path = write_tsv(tmp_path / "c.tsv", [(t, s) for s, t in PAIRS], header="en\tref\tes")
    # header "en ref es": write_tsv puts the index first, so fix the rows by hand
    path.write_text(
        "en\tref\tes\n" + "".join(f"{t}\t{i}\t{s}\n" for i, (s, t) in enumerate(PAIRS)),
        encoding="utf-8",
    )
    corpus = TsvCorpus(str(path), "es", "en")
    assert len(corpus) == 3 and list(corpus) == PAIRS


def test_text_prefix_pairs_lines(tmp_path):
    (tmp_path / "c.es").write_text("".join(s + "\n" for s, _ in PAIRS), encoding="utf-8")
    (tmp_path / "c.en").write_text("".join(t + "\n" for _, t in PAIRS), encoding="utf-8")
    corpus = TextCorpus(str(tmp_path / "c"), "es", "en")
    assert len(corpus) == 3 and list(corpus) == PAIRS


def test_gzip_bom_and_crlf(tmp_path):
    data = "\ufeffid\tes\ten\r\n1\tá\tb\r\n2\tc\td".encode()  # no final newline either
    with gzip.open(tmp_path / "c.tsv.gz", "wb") as fh:
        fh.write(data)
    corpus = open_corpus(str(tmp_path / "c.tsv.gz"), "es", "en")
    assert isinstance(corpus, TsvCorpus) and list(corpus) == [("á", "b"), ("c", "d")]
    assert count_lines(tmp_path / "c.tsv.gz") == 3


def test_hf_json_translation_layout(tmp_path):
    path = tmp_path / "c.jsonl"
    datasets.Dataset.from_list([{"translation": {"es": s, "en": t}} for s, t in PAIRS]).to_json(
        str(path)
    )
    corpus = open_corpus(str(path), "es", "en")
    assert isinstance(corpus, HFCorpus) and len(corpus) == 3 and list(corpus) == PAIRS


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_hf_files_with_one_column_per_language(tmp_path, suffix):
    path = tmp_path / f"c.{suffix}"
    ds = datasets.Dataset.from_dict({"es": [s for s, _ in PAIRS], "en": [t for _, t in PAIRS]})
    getattr(ds, f"to_{suffix}")(str(path))
    assert list(open_corpus(str(path), "es", "en")) == PAIRS


def test_hf_save_to_disk_dataset_dict_with_split(tmp_path):
    rows = {"translation": [{"es": s, "en": t} for s, t in PAIRS]}
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(rows),
            "validation": datasets.Dataset.from_dict(rows).select([0]),
        }
    )
    dd.save_to_disk(str(tmp_path / "saved"))
    assert list(open_corpus(str(tmp_path / "saved"), "es", "en")) == PAIRS
    assert list(open_corpus(f"{tmp_path}/saved:validation", "es", "en")) == PAIRS[:1]
    with pytest.raises(
        NmtError, match=r"no split `test`; the splits are \['train', 'validation'\]"
    ):
        open_corpus(f"{tmp_path}/saved:test", "es", "en")


def test_hf_without_language_columns(tmp_path):
    path = tmp_path / "c.jsonl"
    datasets.Dataset.from_dict({"de": ["a"], "fr": ["b"]}).to_json(str(path))
    with pytest.raises(NmtError, match=r"columns are \['de', 'fr'\]"):
        open_corpus(str(path), "es", "en")


def test_hf_unloadable_name_is_a_clear_error():
    with pytest.raises(NmtError, match="`datasets` could not load it") as err:
        open_corpus("no-such-user/no-such-corpus", "es", "en")
    assert "fix:" in str(err.value)


def test_detect_format(tmp_path):
    (tmp_path / "p.es").write_text("a\n")
    (tmp_path / "p.en").write_text("b\n")
    (tmp_path / "c.tsv").write_text("es\ten\n")
    (tmp_path / "c.json").write_text("{}\n")
    (tmp_path / "c.bin").write_text("x\n")
    assert detect_format(str(tmp_path / "p"), "es", "en") == "text"
    assert detect_format(str(tmp_path / "c.tsv"), "es", "en") == "tsv"
    assert detect_format(str(tmp_path / "c.json"), "es", "en") == "hf"
    assert detect_format("org/name", "es", "en") == "hf"
    with pytest.raises(NmtError, match="cannot tell the corpus format"):
        detect_format(str(tmp_path / "c.bin"), "es", "en")


# --- bad input -------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(NmtError, match="file not found"):
        TsvCorpus(str(tmp_path / "none.tsv"), "es", "en")
    with pytest.raises(NmtError, match="file not found") as err:
        TextCorpus(str(tmp_path / "none"), "es", "en")
    assert "none.es" in str(err.value)


def test_line_counts_differ_names_both_files_and_counts(tmp_path):
    (tmp_path / "c.es").write_text("a\nb\nc\n")
    (tmp_path / "c.en").write_text("a\nb\n")
    with pytest.raises(NmtError) as err:
        TextCorpus(str(tmp_path / "c"), "es", "en")
    text = str(err.value)
    assert "c.es has 3 lines" in text and "c.en has 2" in text


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_bytes(b"id\tes\ten\n1\tok\tok\n2\tmal\xe1\tbad\n")
    with pytest.raises(NmtError, match=rf"{path}:3: invalid UTF-8"):
        list(TsvCorpus(str(path), "es", "en"))


def test_tsv_missing_column_and_short_row(tmp_path):
    path = write_tsv(tmp_path / "c.tsv", [("a", "b")], header="id\tes\tde")
    with pytest.raises(NmtError, match=rf"{path}:1: the header has no column named 'en'"):
        TsvCorpus(str(path), "es", "en")
    path.write_text("")
    with pytest.raises(NmtError, match=rf"{path}: the file is empty"):
        TsvCorpus(str(path), "es", "en")
    path.write_text("id\tes\ten\n1\ta\tb\n2\tonly-two\n")
    with pytest.raises(NmtError, match=rf"{path}:3: expected 3 tab-separated fields, found 2"):
        list(TsvCorpus(str(path), "es", "en"))


def test_tsv_a_language_column_named_twice_is_refused(tmp_path):
    """`en<TAB>de<TAB>en`: which `en` holds the language is ambiguous (the first was taken)."""
    path = tmp_path / "c.tsv"
    path.write_text("en\tde\ten\nHello\tHallo\tHi\n")
    with pytest.raises(NmtError, match=rf"{path}:1: the header names the column 'en' 2 times"):
        TsvCorpus(str(path), "de", "en")
    path.write_text("id\tes\ten\tid\n1\ta\tb\t2\n")  # other columns may repeat
    assert list(TsvCorpus(str(path), "es", "en")) == [("a", "b")]


def test_read_lines_streams(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("x\n" * 100_000)
    lines = read_lines(path)
    assert next(lines) == "x"  # a generator: nothing forces the whole file into memory
    assert sum(1 for _ in lines) == 99_999
