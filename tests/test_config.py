from pathlib import Path

import pytest

from nmt.config import Config, apply_overrides, default, load_config, reference_markdown
from nmt.errors import NmtError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_come_from_the_schema():
    cfg = load_config()
    assert cfg == Config()
    assert default("data.vocab_size") == cfg.data.vocab_size == 8000


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  vocab_size: 500\ntrain:\n  batch_tokens: 100\n")
    cfg = load_config(path, ["train.batch_tokens=4000", "model.dropout=0.3", "data.src=es"])
    assert (cfg.data.vocab_size, cfg.train.batch_tokens) == (500, 4000)
    assert cfg.model.dropout == 0.3 and cfg.data.src == "es"


def test_scientific_notation_without_a_dot(tmp_path):
    """PyYAML reads `5e-4` as a string; the schema knows lr is a float."""
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 5e-4\n")
    assert load_config(path, ["train.min_lr=1e-7"]).train.lr == 5e-4
    assert load_config(path, ["train.min_lr=1e-7"]).train.min_lr == 1e-7
    with pytest.raises(NmtError, match="must be a number"):
        apply_overrides(Config(), ["train.lr=fast"])


def test_int_accepted_for_float_but_not_bool_for_int():
    assert apply_overrides(Config(), ["model.dropout=0"]).model.dropout == 0.0
    with pytest.raises(NmtError, match="must be an integer"):
        apply_overrides(Config(), ["train.seed=true"])


def test_unknown_key_names_file_line_and_suggests(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  src: es\n  vocab_sise: 500\n")
    with pytest.raises(NmtError) as err:
        load_config(path)
    text = str(err.value)
    assert f"{path}:3" in text and "vocab_sise" in text and "did you mean `vocab_size`" in text


def test_unknown_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1\n")
    with pytest.raises(NmtError, match=r"unknown section `optim`.*\n.*valid sections: data"):
        load_config(path)


@pytest.mark.parametrize(
    "item, message",
    [
        ("model.arch=lstm", "must be one of rnnenc, rnnsearch, luong"),
        ("train.batch_tokens=0", "must be at least 1"),
        ("data.character_coverage=1.5", "must be between 0.9 and 1.0"),
        ("data.src=1", "must be a string"),
        ("model.dec_transition_depth=0", "must be between 1 and 32"),
        ("model.layer_norm=2", "must be true or false"),
        ("model.arch", "must look like section.key=value"),
        ("model.emb_dropout=-0.5", "must be -1 or between 0 and 0.99"),
        ("train.src_word_dropout=1", "must be between 0.0 and 0.9"),
        ("train.schedule=step", "must be one of constant, inverse_sqrt, plateau, linear"),
    ],
)
def test_bad_values_say_what_is_valid(item, message):
    with pytest.raises(NmtError, match=message) as err:
        apply_overrides(Config(), [item])
    assert f"--set {item}" in str(err.value)


def test_bad_value_in_yaml_names_its_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  hidden_size: 512\n  arch: transformer\n")
    with pytest.raises(NmtError, match=f"{path}:3: `model.arch` must be one of"):
        load_config(path)


def test_invalid_yaml_and_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(NmtError, match="not valid YAML") as err:
        load_config(path)
    assert err.value.fix is not None  # every config error says what to do
    path.write_text("model: 3\n")
    with pytest.raises(NmtError, match="section `model` must be a mapping") as err:
        load_config(path)
    assert "indented `key: value`" in str(err.value)
    with pytest.raises(NmtError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_a_key_or_section_given_twice_is_an_error_naming_both_lines(tmp_path):
    """YAML itself keeps the last of two equal keys, silently dropping the first."""
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  emb_size: 16\ntrain:\n  lr: 0.1\nmodel:\n  hidden_size: 8\n")
    with pytest.raises(NmtError, match=r"c.yaml:5: .*model appears twice \(also on line 1\)"):
        load_config(path)
    path.write_text("train:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(NmtError, match=r"c.yaml:3: .*train.lr appears twice \(also on line 2\)"):
        load_config(path)


@pytest.mark.parametrize("name", ["sample.yaml", "bible-es-en.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.data.src == "es" and cfg.data.tgt == "en"


def test_docs_config_md_is_generated_from_the_schema():
    """Every key is documented; regenerate with `make docs` when this fails."""
    assert (ROOT / "docs" / "config.md").read_text(encoding="utf-8") == reference_markdown()
    for key in ("vocab_size", "batch_tokens", "arch", "beam_size"):
        assert f"| `{key}` |" in reference_markdown()
