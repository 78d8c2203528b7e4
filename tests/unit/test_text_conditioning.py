"""The text conditioner end to end on tiny modules: prompts -> tokens -> encoder -> masked cross-attention."""

from __future__ import annotations

import io
import re

import pytest
import torch
from torch import nn

from tests.unit import test_unet as unet_tests
from tests.unit.test_unet import CTX
from tinyldm.conditioners import TextConditioner
from tinyldm.denoiser import ConditionalDenoiser
from tinyldm.diffusion import ClassifierFreeGuidance, ConditionedDenoiser, DDPMSolver, NoiseSchedule, sample
from tinyldm.text.prompts import HELD_OUT_TEMPLATES, PromptBank
from tinyldm.unet import UNet


def text_conditioner(**overrides) -> TextConditioner:
    config = dict(context_dim=CTX, num_heads=2, held_out=["7:thick", "3:slanted right"])
    config.update(overrides)
    return TextConditioner(**config)


def tiny_unet() -> UNet:
    """test_unet's tiny UNet with its transformers' output projections made non-zero (they start as identity
    blocks, which would make the context, and so the mask, irrelevant)."""
    unet = unet_tests.tiny_unet()
    torch.manual_seed(0)
    for module in unet.modules():
        if hasattr(module, "proj_out"):
            nn.init.normal_(module.proj_out.weight, std=0.2)
    return unet.eval()


def test_padding_never_changes_the_unet_output():
    unet = tiny_unet()
    gen = torch.Generator().manual_seed(1)
    x, t = torch.randn(3, 4, 8, 8, generator=gen), torch.tensor([10, 500, 990])
    context = torch.randn(3, 4, CTX, generator=gen)
    mask = torch.tensor([[True] * 4, [True, True, False, False], [True, False, False, False]])
    junk = torch.randn(3, 5, CTX, generator=gen) * 10  # padding with large values: ignored if masked
    padded = torch.cat([context, junk], dim=1)  # (3, 9, CTX)
    padded_mask = torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        short = unet(x, t, context, mask)
        long = unet(x, t, padded, padded_mask)
        unmasked = unet(x, t, padded)
    torch.testing.assert_close(long, short, atol=1e-5, rtol=1e-5)
    assert (unmasked - short).abs().max() > 1e-2  # without the mask the padding would change the output


def test_unet_refuses_masks_of_the_wrong_shape_or_hiding_every_token():
    unet = tiny_unet()
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([1, 2]), torch.randn(2, 3, CTX)
    with pytest.raises(ValueError, match="context_mask has shape"):
        unet(x, t, context, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one"):
        unet(x, t, context, torch.tensor([[True, False, False], [False, False, False]]))


def test_a_prompt_gives_the_same_tokens_whatever_the_padding():
    conditioner = text_conditioner().eval()
    prompts = ["a thick 7", "digit 3 that is thin and upright and small", ""]
    ids, mask = conditioner.tokenizer.encode(prompts)  # (3, 12)
    long_ids, long_mask = conditioner.tokenizer.encode(prompts, length=24)  # (3, 24)
    with torch.no_grad():
        short = conditioner.encoder(ids, mask)
        long = conditioner.encoder(long_ids, long_mask)
    torch.testing.assert_close(long[:, :12][mask], short[mask], atol=1e-5, rtol=1e-5)
    unet = tiny_unet()
    x, t = torch.randn(3, 4, 8, 8), torch.tensor([3, 300, 900])
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t, long, long_mask), unet(x, t, short, mask), atol=1e-5, rtol=1e-5)


def test_the_empty_prompt_is_the_unconditional_input():
    conditioner = text_conditioner().eval()
    with torch.no_grad():
        empty, empty_mask = conditioner.encode(["", ""])
        null, null_mask = conditioner.unconditional(2)
        dropped, dropped_mask = conditioner(torch.tensor([1, 7]), drop_labels=True)
    torch.testing.assert_close(null, empty)
    torch.testing.assert_close(dropped, empty)
    assert null_mask.tolist() == empty_mask.tolist() == [[True] + [False] * 11] * 2

    # training: the rows dropped with p_uncond are exactly the empty prompt
    conditioner.train()
    conditions = torch.tensor([[d, 1, 1, 1] for d in range(10)] * 20)  # (200, 1 + 3)
    with torch.no_grad():
        tokens, mask = conditioner(conditions, generator=torch.Generator().manual_seed(0))
    dropped_rows = mask.sum(1) == 1
    assert 5 <= int(dropped_rows.sum()) <= 40  # p_uncond = 0.1 of 200
    torch.testing.assert_close(tokens[dropped_rows], empty[:1].expand(int(dropped_rows.sum()), -1, -1))


def test_guidance_with_prompt_masks_equals_its_two_halves():
    unet = tiny_unet()
    conditioner = text_conditioner().eval()
    denoiser = ConditionalDenoiser(unet, conditioner).eval()
    with torch.no_grad():
        cond, cond_mask = denoiser.context(["a thin 3", "seven"], 2, drop_labels=False)
        uncond, uncond_mask = denoiser.unconditional_context(2)
        x, t = torch.randn(2, 4, 8, 8), torch.tensor([100, 700])
        model = ConditionedDenoiser(denoiser, cond, cond_mask, uncond[:1], uncond_mask[:1])
        guided, _ = ClassifierFreeGuidance(scale=3.0).output(model, NoiseSchedule(), x, 100, t)
        c, u = denoiser(x, t, cond, cond_mask), denoiser(x, t, uncond, uncond_mask)
    torch.testing.assert_close(guided, u + 3.0 * (c - u), atol=1e-5, rtol=1e-4)


def test_sampling_from_prompts_is_seeded():
    denoiser = ConditionalDenoiser(tiny_unet(), text_conditioner()).eval()
    schedule = NoiseSchedule(num_train_timesteps=100)
    solver, guidance = DDPMSolver(steps=5), ClassifierFreeGuidance(scale=2.0)

    def draw(prompts: list[str], seed: int) -> torch.Tensor:
        with torch.no_grad():
            cond, cond_mask = denoiser.context(prompts, len(prompts), drop_labels=False)
            uncond, uncond_mask = denoiser.unconditional_context(len(prompts))
            model = ConditionedDenoiser(denoiser, cond, cond_mask, uncond_context=uncond, uncond_mask=uncond_mask)
            gen = torch.Generator().manual_seed(seed)
            return sample(model, schedule, solver, guidance, (len(prompts), 4, 8, 8), gen)

    prompts = ["a thick 7", "the digit 2, slanted left"]
    first, again, other = draw(prompts, 0), draw(prompts, 0), draw(prompts, 1)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    assert not torch.allclose(first, draw(["a thin 7", "the digit 2, slanted left"], 0))  # the words matter


def test_training_prompts_never_say_a_held_out_combination_or_phrasing():
    bank = PromptBank("digits", ["thickness", "slant", "size"], ["7:thick", "3:slanted right"])
    rows = torch.tensor([[7, 2, 1, 1], [3, 0, 2, 0], [5, 2, 2, 2]] * 400)  # thick 7s, right-slanted 3s, 5s
    prompts = bank.training_prompts(rows, torch.Generator().manual_seed(0))
    sevens, threes, fives = prompts[0::3], prompts[1::3], prompts[2::3]
    assert not any("thick" in p for p in sevens)
    assert not any("slanted right" in p for p in threes)
    assert sum("thick" in p for p in fives) > 100 and sum("slanted right" in p for p in fives) > 100
    assert any("thin" in p for p in threes)  # the other attributes of held-out images are still said
    # none of the held-out phrasings: "the thick 7", "a 7 that is thin", "thick, upright, 7"
    words = {word for words in bank.words for word in words}
    assert HELD_OUT_TEMPLATES == ("the {adj} {cls}", "a {cls} that is {and}", "{list}, {cls}")
    assert not any(p.startswith(tuple(f"the {w}" for w in words)) for p in prompts)
    assert not any(re.fullmatch(r"a .+ that is .+", p) for p in prompts)
    assert not any(p.startswith(tuple(words)) and "," in p for p in prompts)
    assert any(re.fullmatch(r".+ that is .+", p) for p in prompts) and any(p.startswith("a ") for p in prompts)
    # every word any prompt can use is in the tokenizer's vocabulary
    conditioner = text_conditioner()
    assert "<unk>" not in {tok for p in bank.corpus() for tok in conditioner.tokenizer.tokens(p)}


def test_prompts_name_their_class():
    digits = text_conditioner()
    assert digits.label_of(["a thick seven", "digit 3, thin", "the number nine", "3 and 7", "a thick one"]) == [
        7,
        3,
        9,
        -1,
        1,
    ]
    fashion = text_conditioner(vocabulary="fashion", attributes=["size", "brightness"], held_out=[])
    assert fashion.label_of(["a small t-shirt", "a dark shirt", "ankle boot", "a boot", "bright"]) == [0, 6, 9, 9, -1]


def test_bad_text_settings_are_refused_naming_what_is_allowed():
    with pytest.raises(ValueError, match="'7:bold'.*'bold' is not one of"):
        text_conditioner(held_out=["7:bold"])
    with pytest.raises(ValueError, match=r"'12:thick'.*\[0, 10\)"):
        text_conditioner(held_out=["12:thick"])
    with pytest.raises(ValueError, match="vocabulary='letters'"):
        text_conditioner(vocabulary="letters")
    with pytest.raises(ValueError, match="max_length=8 is too small"):
        text_conditioner(max_length=8)
    with pytest.raises(ValueError, match="p_uncond"):
        text_conditioner(p_uncond=1.0)


def test_tokenizer_and_attribute_bins_travel_in_the_checkpoint_as_plain_data():
    conditioner = text_conditioner()
    images = torch.rand(60, 1, 32, 32) * 2 - 1
    conditions = conditioner.conditions_for(images, torch.arange(60) % 10, fit=True)  # (60, 4)
    assert conditions.shape == (60, 4) and set(conditions[:, 1:].unique().tolist()) <= {0, 1, 2}
    buffer = io.BytesIO()
    torch.save(conditioner.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # no pickle of code: tokenizer JSON, edges as lists
    restored = text_conditioner()
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.attribute_thresholds(), conditioner.attribute_thresholds())
    assert restored.tokenizer.to_json() == conditioner.tokenizer.to_json()
    torch.testing.assert_close(restored.conditions_for(images, torch.arange(60) % 10), conditions)


def test_evaluation_prompts_ask_what_each_family_promises():
    from tinyldm.evaluation.text import grid_prompts, paired_requests, requests

    bank = PromptBank("digits", ["thickness", "slant", "size"], ["7:thick", "3:slanted right"])
    families = requests(bank, n_per_class=6, seed=0)
    words = {word for words in bank.words for word in words}
    training = set(
        bank.training_prompts(
            torch.tensor([[c, b, s, z] for c in range(10) for b in range(3) for s in range(3) for z in range(3)] * 20),
            torch.Generator().manual_seed(0),
        )
    )
    assert len(families["held_out_phrasings"]) == 60 and not training & {
        r.prompt for r in families["held_out_phrasings"]
    }
    # held-out pairs: exactly the pair, in training templates, and never a held-out pair among the others
    assert [(r.label, r.bins) for r in families["held_out_combinations"]] == [(3, (-1, 2, -1))] * 6 + [
        (7, (2, -1, -1))
    ] * 6
    assert all(("thick" if r.label == 7 else "slanted right") in r.prompt for r in families["held_out_combinations"])
    asked = families["held_out_combinations"] + families["seen"] + families["held_out_phrasings"]
    assert text_conditioner().label_of([r.prompt for r in asked]) == [r.label for r in asked]  # each names its class
    for request in families["seen"] + families["held_out_phrasings"]:
        assert all((request.label, a, b) not in bank.held_out for a, b in enumerate(request.bins) if b >= 0)
        assert any(w in request.prompt for w in words)
    pairs = paired_requests(bank, pairs_per_class=2)
    low, high = pairs["thickness"]
    assert [r.prompt.replace("thin", "thick") for r in low] == [r.prompt for r in high] and len(low) == 20
    columns, prompts = grid_prompts(bank, ["slant"])
    assert (
        columns == ["class only", "slanted left", "upright", "slanted right"] and prompts[3][7] == "a slanted right 7"
    )
