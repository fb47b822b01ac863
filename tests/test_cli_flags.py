"""The run-config flags are generated from PruneConfig and HealConfig (interlace.cli.flags): each field
is a flag with the dataclass's default and its docstring line as help, so nothing repeats them."""

import dataclasses

import pytest
import typer

from interlace.cli.app import app
from interlace.cli.flags import attribute_docs
from interlace.config import EMBEDDED_HEAL, HEAL_PARAMS, HealConfig, PruneConfig


def options(command: str) -> dict:
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[command].params if p.param_type_name == "option"}  # typer vendors its own click


@pytest.mark.parametrize("config", [PruneConfig, HealConfig])
def test_every_field_is_documented(config):
    assert set(attribute_docs(config)) == {f.name for f in dataclasses.fields(config)}


def test_prune_has_a_flag_for_every_field_with_its_default():
    flags = options("prune")
    for field in dataclasses.fields(PruneConfig):
        if field.name in ("model", "heal"):  # the argument; the nested healing fields below
            continue
        option = flags[field.name]
        expected = None if field.name == "data" else field.default  # data: resolved from the model
        assert option.default == expected, field.name
        assert attribute_docs(PruneConfig)[field.name][1:] in option.help, field.name
    for field in dataclasses.fields(HealConfig):
        if field.name == "seed":  # --seed, shared with PruneConfig
            continue
        option = flags[HEAL_PARAMS.get(field.name, field.name)]
        assert option.default is None, field.name  # unset: the paper's or the embedded default
        if field.name == "lr":  # by model size (config.default_heal), stated in the field's doc line
            assert "3e-4 under 1B parameters" in option.help and "--lr 1e-5" in option.help
        else:
            assert f"(default: {field.default}" in option.help, field.name
        if field.name in EMBEDDED_HEAL and EMBEDDED_HEAL[field.name] != field.default:
            assert f"embedded model: {EMBEDDED_HEAL[field.name]}" in option.help, field.name


def test_flag_names_stay_as_documented():
    flags = {opt for option in options("prune").values() for opt in option.opts + option.secondary_opts}
    for flag in ("--out", "--ratio", "--heal-method", "--heal-loss", "--no-heal", "--no-eval", "--lr", "--train-lm-head", "--save-every", "--push-to-hub"):
        assert flag in flags, flag


def test_compare_and_sweep_share_the_defaults():
    for command in ("compare", "sweep"):
        flags = options(command)
        for name in ("calib_samples", "seed"):
            assert flags[name].default == getattr(PruneConfig(), name), (command, name)
    assert options("compare")["ratio"].default == PruneConfig().ratio
    assert options("sweep")["method"].default == PruneConfig().method


def test_compare_and_sweep_take_the_run_flags_they_pass_on():
    """compare and sweep build the PruneConfig prune runs; its dtype, deepstack and protected
    layers reach the model they load (sweep's Session once took neither dtype nor deepstack)."""
    for command in ("compare", "sweep"):
        flags = options(command)
        for name in ("dtype", "deepstack", "protect"):
            assert flags[name].default == getattr(PruneConfig(), name), (command, name)


def test_bench_flags_are_generated_from_bench_settings():
    from interlace.speed.settings import BenchSettings

    flags, fast = options("bench"), BenchSettings.fast()
    for field in dataclasses.fields(BenchSettings):
        if field.name == "image_size":  # declared by the command, which parses 448x448
            continue
        option, by_fast = flags[field.name], getattr(fast, field.name) != field.default
        assert option.default == (None if by_fast else field.default), field.name  # unset: --fast decides
        assert attribute_docs(BenchSettings)[field.name][1:] in option.help, field.name
        if by_fast:
            assert f"default {field.default}; --fast {getattr(fast, field.name)}" in option.help, field.name
