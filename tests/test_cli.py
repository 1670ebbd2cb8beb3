import subprocess
import sys

import pytest
from typer.testing import CliRunner

from nmt.cli import app
from nmt.config import load_config
from nmt.errors import NmtError
from tests.conftest import SAMPLE, write_tsv

runner = CliRunner()


def test_help_lists_commands_and_option_defaults():
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    for command in ("preprocess", "train", "translate", "evaluate", "config", "bench"):
        assert command in top.stdout
    help_text = runner.invoke(app, ["preprocess", "--help"]).stdout
    for option in (
        "--src",
        "--tgt",
        "--train",
        "--dev",
        "--test",
        "--out",
        "--vocab-size",
        "--joint",
        "--separate",
        "--format",
        "--overwrite",
        "--set",
        "--config",
    ):
        assert option in help_text
    assert "default: (8000)" in help_text and "default: (auto)" in help_text


def test_translate_help_explains_every_option():
    result = runner.invoke(app, ["translate", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in (
        "--input",
        "--output",
        "--beam",
        "--alpha",
        "--nbest",
        "--batch-tokens",
        "--format",
        "--attention",
        "--plot-attention",
        "--errors",
        "--device",
    ):
        assert option in result.output
    assert "default: (5)" in result.output and "default: (20000)" in result.output


def test_preprocess_cli_with_config_and_overrides(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "preprocess",
            "-c",
            "configs/sample.yaml",
            "--out",
            str(out),
            "--set",
            "data.vocab_size=300",
            "--test",
            "",
            "--train",
            str(SAMPLE / "dev.tsv"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "cleaning train: 502 pairs read" in result.stdout
    assert "subwords es: spm.model, 300 pieces" in result.stdout
    assert (out / "manifest.json").exists() and not (out / "test.es.bin").exists()


def test_option_values_are_validated_like_config_values(tmp_path):
    result = runner.invoke(
        app,
        [
            "preprocess",
            "--out",
            str(tmp_path / "o"),
            "--src",
            "es",
            "--tgt",
            "en",
            "--train",
            "x",
            "--dev",
            "x",
            "--format",
            "xml",
        ],
    )
    assert result.exit_code == 2
    assert "--format: `data.format` must be one of auto, tsv, text, hf" in result.stderr


def test_config_command_prints_resolved_yaml():
    result = runner.invoke(app, ["config", "configs/sample.yaml", "--set", "model.layers=2"])
    assert (
        result.exit_code == 0
        and "layers: 2" in result.stdout
        and "vocab_size: 4000" in result.stdout
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            [
                "preprocess",
                "--src",
                "es",
                "--tgt",
                "en",
                "--train",
                "missing.tsv",
                "--dev",
                "d.tsv",
                "--out",
                "o",
            ],
            "missing.tsv: file not found",
        ),
        (["evaluate", "missing.txt", "ref.txt"], "missing.txt: input file not found"),
        (["config", "missing.yaml"], "missing.yaml: config file not found"),
        (["config", "."], ".: this config path is a directory"),
        (["evaluate", ".", "."], ".: the input is a directory"),
        (["train", "--data", "nodata", "--out", "run"], "nodata: not a preprocessed directory"),
        (["average", "a.pt", "b.pt", "--out", "c.pt"], "a.pt: checkpoint not found"),
    ],
)
def test_bad_input_exits_2_without_traceback(tmp_path, args, message):
    """Through the installed console script: a message, exit code 2, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "nmt", *args], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")


def test_invalid_utf8_through_the_cli(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"id\tes\ten\n1\thola\thello\n2\tse\xf1or\tsir\n")
    good = write_tsv(tmp_path / "dev.tsv", [("hola", "hello")])
    result = runner.invoke(
        app,
        [
            "preprocess",
            "--src",
            "es",
            "--tgt",
            "en",
            "--train",
            str(bad),
            "--dev",
            str(good),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2 and f"{bad}:3: invalid UTF-8" in result.stderr
    assert not (tmp_path / "o").exists()


def test_evaluate_refuses_empty_files_instead_of_failing_the_gate(tmp_path):
    """Exit 1 means "BLEU below the gate"; an empty translation is an error (2), not a score."""
    for name in ("hyp.txt", "ref.txt"):
        (tmp_path / name).write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "nmt", "evaluate", "hyp.txt", "ref.txt", "--min-bleu", "10"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "nothing to score" in proc.stderr, proc.stderr


def test_options_that_would_be_ignored_are_errors(tmp_path):
    """An option given without the one it works with (it used to be dropped silently), a
    directory given as the checkpoint, and a metric named twice (scored once)."""
    (tmp_path / "in.txt").write_text("hola\n", encoding="utf-8")
    base = ["translate", str(tmp_path / "model.pt"), "-i", str(tmp_path / "in.txt")]
    for option in (["--temperature", "0.5"], ["--seed", "5"], ["--plot-lines", "3"],
                   ["--glossary-ignore-case"]):  # fmt: skip
        result = CliRunner().invoke(app, [*base, *option])
        assert result.exit_code == 2 and f"{option[0]} only applies with" in result.output
    result = CliRunner().invoke(app, ["translate", str(tmp_path), "-i", str(tmp_path / "in.txt")])
    assert result.exit_code == 2 and "a directory, not a checkpoint" in result.output
    assert str(tmp_path / "best.pt") in result.output
    result = CliRunner().invoke(
        app, ["evaluate", str(tmp_path / "in.txt"), str(tmp_path / "in.txt"), "--metrics",
              "bleu,chrf,bleu"],
    )  # fmt: skip
    assert result.exit_code == 0 and result.output.count("BLEU") == 1, result.output


@pytest.mark.parametrize(
    "args",
    [["serve", "x.pt", "--beam", "0"], ["translate", "x.pt", "--bogus"], ["translate"]],
)
def test_options_click_refuses_are_reported_like_every_user_error(args):
    """Out-of-range values, unknown options and missing arguments: `error:` + `fix:`, exit 2."""
    proc = subprocess.run([sys.executable, "-m", "nmt", *args], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stderr
    assert f"fix: see `nmt {args[0]} --help`" in proc.stderr and "Usage:" not in proc.stderr


def test_messages_name_what_to_change():
    with pytest.raises(NmtError, match="`model` is a section, not a key") as err:
        load_config(None, ["model=3"])
    assert "model.KEY=VALUE" in err.value.fix and "did you mean" not in str(err.value)
    from nmt.serve.server import bind, read_api_key

    with pytest.raises(NmtError, match="cannot listen on 999.1.1.1") as err:
        bind("999.1.1.1", 0)
    assert err.value.where == "--host" and "port" not in err.value.fix
    with pytest.raises(NmtError, match="cannot read the API key file") as err:
        read_api_key("/nonexistent/key")
    assert err.value.fix and "--api-key-file" in err.value.fix
