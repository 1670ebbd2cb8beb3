"""The lexical shortlist: built from the training data, stored in checkpoints, and a search that
scores each sentence's list alone, with every constraint still satisfiable."""

import random
from pathlib import Path

import pytest
import torch
from test_beam import JOINS, LENGTHS, _same, _staggered
from test_constraints import SYMBOLS, _valid
from test_search import _model, _sources
from typer.testing import CliRunner

from nmt.cli import app
from nmt.config import Config, apply_overrides
from nmt.data.shortlist import Shortlist, build_shortlist
from nmt.data.tokenizer import EOS_ID, UNK_ID, Tokenizer
from nmt.decode.beam import BeamBatch, beam_search
from nmt.decode.constraints import Constraints
from nmt.decode.greedy import greedy_search
from nmt.decode.shortlist import complete
from nmt.errors import NmtError
from nmt.model.checkpoint import load_checkpoint, save_checkpoint
from nmt.preprocess import preprocess
from nmt.train import train
from nmt.translate import Translator
from tests.conftest import data_config, write_tsv
from tests.test_translate import TINY as TRANSLATE_TINY

runner = CliRunner()
TINY = [*TRANSLATE_TINY, "decode.max_input_len=0"]  # no line is split
VOCAB = 30


def _lists(n, vocab=VOCAB, size=10, seed=0):
    """Random lists [n, V] of `size` pieces each."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, vocab, dtype=torch.bool)
    for i in range(n):
        masks[i, torch.randperm(vocab, generator=g)[:size]] = True
    return masks


# --- building ------------------------------------------------------------------------------


def test_the_builder_finds_the_known_translation_pairs(tmp_path):
    """Source letter x always comes with target letter f(x) (a permutation), in another order
    and among other letters: each source piece's first target piece is its translation."""
    rng = random.Random(0)
    letters = [chr(97 + i) for i in range(20)]
    f = dict(zip(letters, letters[7:] + letters[:7]))
    pairs = []
    for _ in range(3000):
        words = rng.sample(letters, rng.randint(3, 8))
        pairs.append((" ".join(words), " ".join(f[w] for w in reversed(words))))
    cfg = data_config(train=str(write_tsv(tmp_path / "t.tsv", pairs)), dev=str(
        write_tsv(tmp_path / "d.tsv", pairs[:20])), test="", vocab_size=45)  # fmt: skip
    preprocess(cfg, tmp_path / "data", progress=False)
    shortlist = build_shortlist(tmp_path / "data", k=5)
    tok = Tokenizer.load(tmp_path / "data" / "spm.model")
    for x, y in f.items():
        assert int(shortlist.table[tok.sp.piece_to_id(f"▁{x}"), 0]) == tok.sp.piece_to_id(f"▁{y}")
    assert shortlist.table.shape[1] == 5
    frequent = [tok.sp.id_to_piece(int(t)) for t in shortlist.frequent[:20]]
    assert set(frequent) == {f"▁{y}" for y in letters}  # 20 letters, one piece each
    # the same pairs sampled with the same seed: the same shortlist (a resumed run's)
    again = build_shortlist(tmp_path / "data", k=5, max_pairs=500, seed=3)
    assert torch.equal(again.table, build_shortlist(tmp_path / "data", 5, 500, 3).table)


def test_a_list_holds_the_sources_rows_and_the_frequent_pieces():
    table = torch.tensor([[-1, -1], [-1, -1], [-1, -1], [-1, -1], [7, 8], [9, -1]])
    shortlist = Shortlist(table, torch.tensor([5, 6, 7]), tgt_size=10)
    masks = shortlist.masks(torch.tensor([[4, 5, 3, 0], [5, 3, 0, 0]]), k=2, n=1)
    assert masks[0].nonzero().squeeze(1).tolist() == [5, 7, 8, 9]
    assert masks[1].nonzero().squeeze(1).tolist() == [5, 9]
    assert shortlist.masks(torch.tensor([[4, 3]]), k=1, n=0)[0].nonzero().squeeze(1).tolist() == [7]


def test_a_damaged_stored_shortlist_is_an_error():
    good = Shortlist(torch.zeros(6, 2, dtype=torch.long), torch.arange(4), 10).entry()
    Shortlist.from_entry(good, 6, 10, "x.pt")
    for bad in (
        None,
        {**good, "table": good["table"][:5]},
        {**good, "table": good["table"] + 10},
        {**good, "frequent": good["frequent"].float()},
    ):
        with pytest.raises(NmtError, match="shortlist"):
            Shortlist.from_entry(bad, 6, 10, "x.pt")


# --- the search ----------------------------------------------------------------------------


def test_the_list_always_holds_what_the_constraints_require():
    """eos, unk, the placeholders each sentence needs and its prefix, even in an empty list."""
    need = [[0, 2], [], [1]]
    constraints = Constraints.build(SYMBOLS, need, [[-1, -1, -1]] * 3)
    prefix = torch.tensor([[9, 11, -1], [12, -1, -1], [-1, -1, -1]])
    masks = complete(torch.zeros(3, VOCAB, dtype=torch.bool), constraints, prefix)
    expected = [{EOS_ID, UNK_ID, 4, 6, 9, 11}, {EOS_ID, UNK_ID, 12}, {EOS_ID, UNK_ID, 5}]
    assert [set(row.nonzero().squeeze(1).tolist()) for row in masks] == expected


def test_with_empty_lists_the_constraints_still_hold():
    """The search keeps every placeholder and the prefix even when a sentence's list is
    empty (so it holds only what `complete` adds)."""
    model = _model("rnnsearch", 12, sharpen=2.0)
    src, lengths = _sources([5, 7, 3], 12, seed=2)
    need, partners = [[0, 1], [2], []], [[-1, 0, -1]] * 3
    constraints = Constraints.build(SYMBOLS, need, partners)
    prefix = torch.tensor([[9, 10], [-1, -1], [11, -1]])
    empty = torch.zeros(3, 12, dtype=torch.bool)
    out = beam_search(model, src, lengths, beam=3, nbest=3, max_len_b=4,
                      constraints=constraints, prefix=prefix, vocab=empty)  # fmt: skip
    for i, hyps in enumerate(out):
        assert hyps
        for hyp in hyps:
            assert _valid(hyp.tokens, need[i], {1: 0})
            head = [t for t in prefix[i].tolist() if t >= 0]
            assert hyp.tokens[: len(head)] == head
            assert set(hyp.tokens) <= {UNK_ID, 4, 5, 6, *head}


@pytest.mark.parametrize("arch", ["rnnsearch", "luong"])
def test_greedy_search_equals_the_full_one_whenever_its_output_lies_inside(arch):
    """Exact for greedy search: the softmax keeps the order within a row, so the best piece
    of the list is the best of all whenever it lies inside."""
    model = _model(arch, VOCAB, arch == "luong", sharpen=4.0, seed=1)
    src, lengths = _sources([6, 3, 9, 2, 5, 7, 4, 8], VOCAB, seed=4)
    full, _ = greedy_search(model, src, lengths, 1.0, 4)
    masks = _lists(len(full), size=6, seed=1)
    for i, tokens in enumerate(full):
        masks[i, tokens] = True
    outside = next(i for i, tokens in enumerate(full) if max(tokens, default=0) > UNK_ID)
    masks[outside, max(full[outside])] = False  # a sentence whose output does not lie inside
    short, _ = greedy_search(model, src, lengths, 1.0, 4, vocab=masks)
    assert [s == f for s, f in zip(short, full)] == [i != outside for i in range(len(full))]


def test_a_list_of_the_whole_vocabulary_is_the_full_search():
    model = _model("luong", VOCAB, True, sharpen=2.0)
    src, lengths = _sources(LENGTHS, VOCAB, seed=5)
    options = dict(beam=4, nbest=4, max_len_b=5, attention=True)
    every = torch.ones(len(LENGTHS), VOCAB, dtype=torch.bool)
    for a, b in zip(beam_search(model, src, lengths, vocab=every, **options),
                    beam_search(model, src, lengths, **options)):  # fmt: skip
        _same(a, b)


def test_beam_search_equals_the_full_one_whenever_its_best_lies_inside():
    """The lists hold the full search's best hypothesis and leave out pieces the model
    (nearly) never emits: the shortlisted search finds the same n-best lists with the same
    scores; without one piece of a best hypothesis it cannot find it. (A list's softmax is
    renormalised over the list, so beams may rank differently where much probability lies
    outside it: then equality is a measured rate, docs/notes/2026-12-04-shortlist.md; for
    greedy search it is exact, above.)"""
    model = _model("rnnsearch", VOCAB, sharpen=2.0, seed=3)
    never = torch.randperm(VOCAB, generator=torch.Generator().manual_seed(0))[:12]
    never = never[never > EOS_ID]
    with torch.no_grad():
        model.output.bias[never] = -60.0
    src, lengths = _sources(LENGTHS, VOCAB, seed=5)
    options = dict(beam=4, nbest=2, max_len_b=5)
    full = beam_search(model, src, lengths, **options)
    masks = _lists(len(LENGTHS), size=12, seed=2)  # some of `never` in some lists
    masks[:, [t for t in range(VOCAB) if t not in never]] = True
    assert not masks.all(1).any()
    assert all(masks[i, h.tokens].all() for i, hyps in enumerate(full) for h in hyps)
    for a, b in zip(beam_search(model, src, lengths, vocab=masks, **options), full):
        _same(a, b)
    for i, hyps in enumerate(full):
        masks[i, [t for t in hyps[0].tokens if t > UNK_ID][:1]] = False
    missing = beam_search(model, src, lengths, vocab=masks, **options)
    assert all(m[0].tokens != f[0].tokens for m, f in zip(missing, full) if max(f[0].tokens) > 1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_sentence_gets_the_same_result_alone_and_in_a_running_batch(dtype):
    """Sentences with lists of their own join and leave a running search (the union of the
    lists changes at every join and leave): each gets exactly what it gets alone (in float32
    the same outputs, with scores as close as without lists)."""
    model = _model("luong", VOCAB, True, sharpen=2.0).to(dtype)
    src, lengths = _sources(LENGTHS, VOCAB, seed=1)
    masks = _lists(len(LENGTHS), size=8, seed=3)
    options = dict(beam=4, nbest=4, max_len_b=5, attention=True)
    batch, out, step = BeamBatch(model, **options), {}, 0
    while step <= max(JOINS) or len(batch):
        if step in JOINS:
            rows = torch.tensor(JOINS[step])
            n = int(lengths[rows].max())
            batch.add(JOINS[step], src[rows, :n], lengths[rows], vocab=masks[rows])
        out.update(batch.step())
        step += 1
    for i, n in enumerate(LENGTHS):
        alone = beam_search(model, src[i : i + 1, :n], lengths[i : i + 1], vocab=masks[i : i + 1],
                            **options)  # fmt: skip
        if dtype == torch.float64:
            _same(alone[0], out[i])
        else:  # float32: the other products (GRU, attention) differ in the last bits
            assert [h.tokens for h in alone[0]] == [h.tokens for h in out[i]]
            assert [h.score for h in alone[0]] == pytest.approx([h.score for h in out[i]], 1e-5)
        assert all(masks[i, t] for hyp in out[i] for t in hyp.tokens)
    plain = _staggered(model, src, lengths, JOINS, **options)  # no lists: another result
    assert any([h.tokens for h in plain[i]] != [h.tokens for h in out[i]] for i in out)


def test_a_batch_takes_lists_for_every_sentence_or_none():
    model = _model("rnnsearch", VOCAB)
    src, lengths = _sources([4, 3], VOCAB)
    batch = BeamBatch(model, beam=2)
    batch.add([0], src[:1], lengths[:1], vocab=_lists(1))
    with pytest.raises(ValueError, match="shortlists"):
        batch.add([1], src[1:], lengths[1:])


# --- checkpoints ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(sample_dir, tmp_path_factory):
    """A barely trained model (its checkpoints hold the shortlist training built), and the
    same checkpoint without one, as nmt wrote them before shortlists."""
    run = tmp_path_factory.mktemp("shortlist") / "run"
    train(apply_overrides(Config(), TINY), sample_dir, run, progress_bar=False, log=lambda _: None)
    old = load_checkpoint(run / "last.pt")
    del old["vocab"]["shortlist"], old["sha256"]
    save_checkpoint(run / "old.pt", old)
    return run


LINES = "En el principio creó Dios los cielos y la tierra.\nY dijo Dios: Sea la luz.\n\nY fué.\n"


def _translate(tmp_path, *args):
    src = tmp_path / "in.es"
    src.write_text(LINES, encoding="utf-8")
    result = runner.invoke(app, ["translate", *map(str, args), "-i", str(src)])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_training_stores_the_shortlist_and_translation_uses_it_when_asked(run, sample_dir):
    checkpoint = load_checkpoint(run / "last.pt")
    stored = Shortlist.from_entry(checkpoint["vocab"]["shortlist"], 1000, 1000, "last.pt")
    built = build_shortlist(sample_dir, stored.table.shape[1], seed=Config().train.seed)
    assert torch.equal(stored.table, built.table) and torch.equal(stored.frequent, built.frequent)
    translator = Translator.from_checkpoint(run / "last.pt")
    assert translator.shortlist is not None and translator.decode_options(shortlist=True).shortlist
    assert not translator.decode_options().shortlist  # off by default: slower as it stands
    assert len(translator.translate(LINES.splitlines())) == 4


def test_an_old_checkpoint_without_a_shortlist_translates_as_before(run, tmp_path):
    """Loaded without one, and translated with the whole vocabulary: the same bytes as the
    checkpoint with its shortlist turned off; asking for one is an error."""
    old = Translator.from_checkpoint(run / "old.pt")
    assert old.shortlist is None and old.vocab(torch.ones(1, 2, dtype=torch.long),
                                               old.decode_options()) is None  # fmt: skip
    assert _translate(tmp_path, run / "old.pt") == _translate(
        tmp_path, run / "last.pt", "--no-shortlist"
    )
    result = runner.invoke(app, ["translate", str(run / "old.pt"), "--shortlist"], input="x\n")
    assert result.exit_code == 2 and "no lexical shortlist" in result.output


def test_nmt_shortlist_adds_one_to_an_old_checkpoint(run, sample_dir, tmp_path):
    out = tmp_path / "new.pt"
    result = runner.invoke(
        app, ["shortlist", str(run / "old.pt"), "--data", str(sample_dir), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    new, trained = load_checkpoint(out), load_checkpoint(run / "last.pt")
    assert torch.equal(new["vocab"]["shortlist"]["table"], trained["vocab"]["shortlist"]["table"])
    assert all(torch.equal(new["model"][k], v) for k, v in trained["model"].items())
    assert _translate(tmp_path, out) == _translate(tmp_path, run / "last.pt")


def test_nmt_shortlist_refuses_bad_input(run, sample_dir, tmp_path):
    other = tmp_path / "other"
    preprocess(data_config(vocab_size=300), other, progress=False)
    cases = [
        (["shortlist", run / "old.pt", "--data", other, "-o", tmp_path / "x.pt"],
         "another vocabulary"),
        (["shortlist", tmp_path / "none.pt", "--data", sample_dir, "-o", tmp_path / "x.pt"],
         "checkpoint not found"),
        (["shortlist", run / "old.pt", "--data", tmp_path, "-o", tmp_path / "x.pt"],
         "not a preprocessed directory"),
        (["shortlist", run / "old.pt", "--data", sample_dir, "-o", run / "old.pt"],
         "the output is also an input"),
    ]  # fmt: skip
    for args, message in cases:
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 2, result.output
        assert "error:" in result.output and message in result.output
    assert not (tmp_path / "x.pt").exists()


# --- the benchmark -----------------------------------------------------------------------------


def test_bench_translate_measures_every_setting_side_by_side_with_bleu(run, sample_dir, tmp_path):
    """Each beam and mode runs every setting back to back (each precision with the full
    softmax, then the shortlist); each row's BLEU is that of what `Translator.translate` gives
    with that setting."""
    from nmt.bench.translate import bench_translate
    from nmt.evaluate import corpus_metrics

    src, ref = sample_dir / "test.es.txt", sample_dir / "test.en.txt"
    rows = bench_translate(
        run / "last.pt", src, 12, [1], [2000], "cpu", ["fp32", "int8"], reference=ref
    )
    settings = [("fp32", "off"), ("fp32", "on"), ("int8", "off"), ("int8", "on")]
    modes = ["batched, 2000 tokens", "one at a time"]
    assert [(r["mode"], r["precision"], r["shortlist"]) for r in rows] == [
        (mode, *setting) for mode in modes for setting in settings
    ]
    lines = src.read_text(encoding="utf-8").splitlines()[:12]
    refs = ref.read_text(encoding="utf-8").splitlines()[:12]
    translators = {
        p: Translator.from_checkpoint(run / "last.pt", "cpu", p) for p in ("fp32", "int8")
    }
    for row in rows:
        hyps = translators[row["precision"]].translate(
            lines, beam=1, shortlist=row["shortlist"] == "on"
        )
        assert row["bleu"] == round(corpus_metrics(hyps, [refs], ("bleu",))[0].score, 2)
        assert row["sentences_per_s"] > 0 and row["vs one at a time"].endswith("x")


def test_bench_translate_refuses_a_shortlist_it_lacks_and_a_reference_that_does_not_match(
    run, sample_dir, tmp_path
):
    short = tmp_path / "short.en"
    short.write_text("one line\n", encoding="utf-8")
    src = str(sample_dir / "test.es.txt")
    bench = ["bench", "translate", "-i", src, "--lines", "2", "--beams", "1", "--out", tmp_path]
    cases = [
        ([run / "old.pt", "--shortlist", "on"], "no lexical shortlist"),
        ([run / "last.pt", "--shortlist", "yes"], "expected on and off"),
        ([run / "last.pt", "--reference", short], "the reference has 1 lines"),
    ]
    for args, message in cases:
        result = runner.invoke(app, [str(a) for a in [*bench, *args]])
        assert result.exit_code == 2, result.output
        assert "error:" in result.output and message in result.output


def test_the_search_profile_accounts_for_the_whole_translation(run, sample_dir, monkeypatch):
    """scripts/profile_search.py: every part's own time, which add up to the whole; the
    translation is what it is unprofiled, and the methods are restored afterwards."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    from profile_search import profile

    lines = (sample_dir / "test.es.txt").read_text(encoding="utf-8").splitlines()[:6]
    translator = Translator.from_checkpoint(run / "last.pt", "cpu", "fp32")
    before = translator.translate(lines, beam=3, shortlist=True)
    methods = [Translator.translate_nbest, Translator.translate_prepared]
    result = profile(translator, lines, 3, shortlist=True)
    seconds = {row["part"]: row["seconds"] for row in result["rows"]}
    assert {"encoder", "decoder step", "output layer + softmax", "scoring: top-k"} <= set(seconds)
    assert all(s >= 0 for s in seconds.values())
    assert sum(seconds.values()) == pytest.approx(result["seconds"], abs=0.01)
    assert result["steps"] > 1 and result["ms_per_step"] > 0
    assert translator.translate(lines, beam=3, shortlist=True) == before
    assert [Translator.translate_nbest, Translator.translate_prepared] == methods  # unpatched


def test_the_operator_profile_bounds_what_faster_products_can_give(run, sample_dir, monkeypatch):
    """scripts/profile_search.py --ops: the products' own seconds are part of the whole, and
    the bound is whole / (whole - products), Amdahl's law with the products free."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    from profile_search import PRODUCTS, operators

    lines = (sample_dir / "test.es.txt").read_text(encoding="utf-8").splitlines()[:6]
    translator = Translator.from_checkpoint(run / "last.pt", "cpu", "int8")
    result = operators(translator, lines, 3, shortlist=False)
    names = {row["op"] for row in result["ops"]}
    assert "aten::_int_mm" in names and "aten::_int_mm" in PRODUCTS
    assert 0 < result["products"] < result["seconds"]
    bound = result["seconds"] / (result["seconds"] - result["products"])
    assert result["bound"] == pytest.approx(bound) and result["bound"] > 1
