import pytest
import torch

from nmt.config import Config, ModelConfig, apply_overrides
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.decode.greedy import greedy_search
from nmt.model import build_model
from tests.conftest import away_from_init

NORM, SKIP = {"layer_norm": True}, {"residual": True}
ARCHS = [  # arch, input feeding, layers, other ModelConfig keys
    ("rnnenc", False, 1, {}),
    ("rnnsearch", False, 1, {}),
    ("rnnsearch", False, 2, {}),
    ("luong", False, 1, {}),
    ("luong", True, 2, {}),
    ("rnnenc", False, 2, {}),
    ("rnnenc", False, 1, NORM),
    ("rnnsearch", False, 2, NORM),
    ("luong", False, 1, NORM),
    ("luong", True, 1, NORM),
    ("rnnenc", False, 3, SKIP),
    ("rnnsearch", False, 3, {**NORM, **SKIP}),
    ("luong", False, 2, SKIP),
    ("rnnsearch", False, 2, {"enc_transition_depth": 2, "dec_transition_depth": 3}),
    ("luong", False, 1, {**NORM, "dec_transition_depth": 2}),
    ("rnnenc", False, 1, {"enc_transition_depth": 3, "dec_transition_depth": 2}),
]
V = 40


def _model(
    arch, feed=False, layers=1, options=None, dropout=0.0, emb=16, hidden=24, dtype=torch.float64
):
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch=arch,
        emb_size=emb,
        hidden_size=hidden,
        layers=layers,
        dropout=dropout,
        input_feeding=feed,
        **(options or {}),
    )
    model = build_model(cfg, V, V, joint_vocab=True).to(dtype)
    away_from_init(model)
    return model


def _batch(lengths, tgt_len=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, V, (len(lengths), max(lengths)), generator=g)
    for i, n in enumerate(lengths):
        src[i, n - 1] = EOS_ID
        src[i, n:] = PAD_ID
    tgt = torch.randint(4, V, (len(lengths), tgt_len + 1), generator=g)
    tgt[:, 0] = BOS_ID
    return src, torch.tensor(lengths), tgt[:, :-1], tgt[:, 1:]


@pytest.mark.parametrize("arch, feed, layers, options", ARCHS)
def test_step_by_step_equals_teacher_forced_forward(arch, feed, layers, options):
    """Search (step) and training (forward) compute the same distribution."""
    model = _model(arch, feed, layers, options).eval()
    src, lengths, tgt_in, _ = _batch([7, 5, 2])
    expected = model(src, lengths, tgt_in).log_softmax(-1)  # [B, T, V]
    state = model.encode(src, lengths)
    for t in range(tgt_in.shape[1]):
        features, state, _ = model.decoder.step(tgt_in[:, t], state)
        torch.testing.assert_close(model.log_probs(features), expected[:, t], rtol=0, atol=1e-10)


@pytest.mark.parametrize("arch, feed, layers, options", ARCHS)
def test_padding_invariance(arch, feed, layers, options):
    """A sentence scores the same alone and inside a padded batch of longer sentences."""
    model = _model(arch, feed, layers, options, dtype=torch.float32).eval()
    src, lengths, tgt_in, tgt_out = _batch([9, 3, 6], tgt_len=8)
    tgt_in[1, 4:], tgt_out[1, 3], tgt_out[1, 4:] = PAD_ID, EOS_ID, PAD_ID  # short target
    with torch.no_grad():
        _, batch_nll = model.loss(src, lengths, tgt_in, tgt_out)
        alone = [
            model.loss(
                src[i : i + 1, : lengths[i]],
                lengths[i : i + 1],
                tgt_in[i : i + 1, : int((tgt_out[i] != PAD_ID).sum())],
                tgt_out[i : i + 1, : int((tgt_out[i] != PAD_ID).sum())],
            )[1]
            for i in range(3)
        ]
    torch.testing.assert_close(batch_nll, sum(alone), rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # per sentence, through the logits
        logits = model(src, lengths, tgt_in)
        single = model(src[1:2, :3], lengths[1:2], tgt_in[1:2, :4])
    torch.testing.assert_close(logits[1, :4], single[0], rtol=1e-5, atol=1e-5)


# learning: the plain models, and each option once (the other tests check every
# configuration's computation)
LEARNS = [config for config in ARCHS if not config[3]] + [
    ("rnnsearch", False, 3, {**NORM, **SKIP}),
    ("rnnsearch", False, 2, {"enc_transition_depth": 2, "dec_transition_depth": 3}),
]


@pytest.mark.parametrize("arch, feed, layers, options", LEARNS)
def test_overfits_a_small_batch(arch, feed, layers, options):
    model = _model(arch, feed, layers, options, dtype=torch.float32, emb=32, hidden=64)
    src, lengths, tgt_in, tgt_out = _batch([8, 6, 7, 5, 8, 4], tgt_len=7)
    tgt_out[:, -1] = EOS_ID
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss, nll = model.loss(src, lengths, tgt_in, tgt_out)
        optimizer.zero_grad()
        (loss / tgt_out.numel()).backward()
        optimizer.step()
    assert float(nll) / tgt_out.numel() < 0.05
    model.eval()
    out, _ = greedy_search(model, src, lengths, max_len_a=2, max_len_b=5)
    assert out == tgt_out[:, :-1].tolist()  # memorised exactly


@pytest.mark.parametrize("arch, feed, layers, options", ARCHS)
def test_evaluation_after_fused_optimizer_steps_sees_the_new_weights(arch, feed, layers, options):
    """Fused Adam (as in training) updates weights in place without bumping their version:
    the model evaluated after training steps must equal a fresh copy of its weights."""
    model = _model(arch, feed, layers, options, dtype=torch.float32)
    src, lengths, tgt_in, tgt_out = _batch([5, 7, 3])

    def evaluate(m):
        m.eval()
        with torch.no_grad():
            nll = m.loss(src, lengths, tgt_in, tgt_out)[1]
            _, scores = greedy_search(m, src, lengths, 1.0, 3)
        m.train()
        return nll, scores

    evaluate(model)  # fills any cache
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05, fused=True)
    for _ in range(3):
        optimizer.zero_grad()
        model.loss(src, lengths, tgt_in, tgt_out)[0].backward()
        optimizer.step()
    fresh = _model(arch, feed, layers, options, dtype=torch.float32)
    fresh.load_state_dict(model.state_dict())
    for got, want in zip(evaluate(model), evaluate(fresh)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("arch", ["rnnenc", "rnnsearch", "luong"])
def test_each_dropout_rate_reaches_its_place(arch):
    """model.emb_dropout and model.output_dropout set their own rates (-1: model.dropout's);
    model.dropout stays between the stacked layers."""
    sets = [f"model.arch={arch}", "model.layers=3", "model.dropout=0.2"]

    def rates(*more: str) -> dict[str, float]:
        model = build_model(apply_overrides(Config(), [*sets, *more]).model, 50, 50, True)
        found = {n: m.p for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout)}
        found |= {n: m.dropout for n, m in model.named_modules() if isinstance(m, torch.nn.GRU)}
        return found

    same = rates()
    assert set(same.values()) == {0.2}
    split = rates("model.emb_dropout=0.3", "model.output_dropout=0.5")
    assert split["dropout"] == 0.5 and split["encoder.dropout"] == split["decoder.dropout"] == 0.3
    between = {n for n in split if n.endswith(("rnn", "upper", "hidden_dropout"))}
    assert between and {split[n] for n in between} == {0.2}, split


def test_tied_and_shared_embeddings():
    model = _model("rnnsearch")
    assert model.output.weight is model.tgt_embed.weight is model.src_embed.weight
    cfg = ModelConfig(emb_size=8, hidden_size=8, tie_output=False)
    separate = build_model(cfg, 30, 40, joint_vocab=False)
    assert separate.src_embed is not separate.tgt_embed
    assert separate.output.weight is not separate.tgt_embed.weight
    assert separate.output.out_features == 40


def test_recurrent_weights_are_orthogonal_per_gate():
    model = _model("rnnsearch", hidden=24, dtype=torch.float64)
    for name, param in model.named_parameters():
        if "weight_hh" in name:
            for block in param.chunk(3):
                eye = torch.eye(24, dtype=torch.float64)
                torch.testing.assert_close(block @ block.T, eye, rtol=0, atol=1e-6)  # fp32 init


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_fused_smoothed_cross_entropy_matches_pytorch(smoothing):
    from torch.nn import functional as F

    from nmt.model.loss import SmoothedCrossEntropy

    torch.manual_seed(0)
    logits = torch.randn(12, 9, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 9, (12,))
    loss, nll = SmoothedCrossEntropy.apply(logits, target, smoothing)
    (2.5 * loss).backward()
    ref_logits = logits.detach().clone().requires_grad_()
    ref = F.cross_entropy(ref_logits, target, label_smoothing=smoothing, reduction="sum")
    (2.5 * ref).backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(nll, F.cross_entropy(logits.detach(), target, reduction="sum"))
    torch.testing.assert_close(logits.grad, ref_logits.grad)


def test_a_model_too_large_for_the_machine_is_refused_before_any_allocation():
    """hidden_size=1000000 was a 12 TB allocation and a traceback: the keys are bounded, and a
    model within the bounds that would not fit is refused from its parameter count."""
    from nmt.config import load_config
    from nmt.errors import NmtError

    for value in ("1000000", "99999999999999999999999"):
        with pytest.raises(NmtError, match="must be between 1 and 16384"):
            load_config(None, [f"model.hidden_size={value}"])
    huge = ModelConfig(emb_size=16384, hidden_size=16384, layers=32)
    with pytest.raises(NmtError, match="parameters: 4 fp32 copies of its weights need") as err:
        build_model(huge, 8000, 8000, True, copies=4)
    assert "model.hidden_size" in err.value.where and err.value.fix


def test_the_size_check_leaves_the_initial_weights_as_they_were():
    """The check builds the model on the meta device first: no random numbers are drawn."""
    from nmt.model.seq2seq import Seq2Seq

    cfg = ModelConfig(arch="rnnsearch", layer_norm=True)
    torch.manual_seed(3)
    direct = Seq2Seq(cfg, 50, 50, share=True).state_dict()
    torch.manual_seed(3)
    built = build_model(cfg, 50, 50, True).state_dict()
    assert all(torch.equal(direct[k], built[k]) for k in direct)


@pytest.mark.parametrize("feed", [False, True])
def test_training_reaches_every_luong_weight(feed):
    """Teacher forcing differentiates every weight, W_c's context columns included (the
    search's step reads them projected and detached: training must not go through it)."""
    model = _model("luong", feed, 2, dtype=torch.float32)
    src, lengths, tgt_in, tgt_out = _batch([5, 7, 3])
    model.loss(src, lengths, tgt_in, tgt_out)[0].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == [], missing
