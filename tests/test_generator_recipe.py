"""The shipped generator's recipe (stage 2's runs and fine-tunes, then stage 3) as `facegen-train
all` runs it: each step's config, and the checks that keep a recipe runnable."""

from __future__ import annotations

import pytest

from training.stages import StageError
from training.stages.generator_recipe import RECIPE, RecipeStep, _validate, last, step_configs


def test_default_preset_takes_each_steps_schedule_and_tiny_keeps_its_own():
    default, tiny = step_configs("default"), step_configs("tiny")
    assert list(default) == [s.name for s in RECIPE]
    assert (default["generator"].steps, default["prior_long"].steps, default["prior_long"].lr) == (7000, 12000, 0.001)
    assert (default["prior_xxlong"].steps, default["prior_xxlong"].kl_warmup_fraction) == (12000, 0)
    # every consistency fine-tune is held to the longest ELBO run, the first starting from it
    assert {s.anchor for s in RECIPE if s.anchor} == {"prior_xxlong"}
    assert next(s for s in RECIPE if s.name == "prior_anchor").start == "prior_xxlong"
    assert default["decoder"].steps == 6000 and default["decoder"].condition_weight == 0
    assert default["decoder_consistent"].condition_names == ("eyes", "mouth")
    assert (default["decoder_consistent"].steps, default["decoder_consistent"].adversarial_start) == (5000, 200)
    # the tiny preset runs the same steps, doing the same things, for its own few steps
    assert {c.steps for c in tiny.values() if hasattr(c, "anchor_from")} == {30}
    assert tiny["decoder"].steps == tiny["decoder_consistent"].steps == 20
    assert tiny["prior_anchor4"].condition_weight == default["prior_anchor4"].condition_weight == 6
    assert tiny["prior_anchor4"].anchor_weight == 1 and tiny["prior_long"].kl_warmup_fraction == 0


def test_user_settings_win_over_the_recipes_and_reach_every_step_of_their_stage():
    cfgs = step_configs("default", ["steps=50", "threads=1"], ["condition_weight=0.5"])
    assert {c.steps for c in cfgs.values() if hasattr(c, "anchor_from")} == {50}
    assert cfgs["decoder"].steps == 6000 and cfgs["decoder_consistent"].condition_weight == 0.5
    with pytest.raises(StageError, match="stepz"):
        step_configs("default", ["stepz=3"])


def test_a_recipe_must_read_only_earlier_steps_and_end_by_exporting():
    with pytest.raises(ValueError, match="no earlier step"):
        _validate((RecipeStep("a", "prior", start="b"), RecipeStep("b", "prior"), RecipeStep("d", "decoder")))
    with pytest.raises(ValueError, match="ends with a decoder"):
        _validate((RecipeStep("a", "prior"),))
    with pytest.raises(ValueError, match="needs the autoencoder"):
        _validate((RecipeStep("a", "prior"), RecipeStep("d", "decoder", start="autoencoder")))
    assert (last("prior"), last("decoder")) == ("prior_anchor4", "decoder_consistent")
