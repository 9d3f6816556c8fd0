"""Eqs. 7-9, the DDIM estimate and the λ_neg schedule on hand-made tensors with hand-computed values."""

import dataclasses

import pytest
import torch

from cocoins.method.losses import (LossConfig, background_loss, cocoins_loss, contrastive_loss, ddim_x0,
                                   masked_distance, mse_distance, negative_weight, total_loss)

X = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])      # [1, 1, 2, 2]
ZERO = torch.zeros_like(X)
M = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])


def test_mse_distance_hand_value():
    assert mse_distance(X, ZERO).item() == pytest.approx((1 + 4 + 9 + 16) / 4)       # 7.5
    assert mse_distance(X, X + 1).item() == pytest.approx(1.0)


def test_masked_distance_uses_only_subject_pixels():
    # L^m(x, y) = L(m x, m y): only the diagonal survives, still divided by all 4 entries.
    assert masked_distance(X, ZERO, M).item() == pytest.approx((1 + 16) / 4)
    assert masked_distance(X, ZERO, None).item() == pytest.approx(7.5)


@pytest.mark.parametrize("form, expected", [("reciprocal", 7.5 + 0.5 / 1.0),
                                            ("subtract", 7.5 - 1.0 + 0.05),   # max(0, d+ - d- + margin)
                                            ("none", 7.5)])
def test_contrastive_loss_forms(form, expected):
    d_pos, d_neg = mse_distance(X, ZERO), mse_distance(X, X + 1)
    assert contrastive_loss(d_pos, d_neg, 0.5, form).item() == pytest.approx(expected)


def test_subtract_is_the_hinged_triplet_form_with_a_gradient_only_inside_the_margin():
    d_pos = torch.tensor([0.10, 0.10], requires_grad=True)
    d_neg = torch.tensor([0.12, 0.50], requires_grad=True)
    loss = contrastive_loss(d_pos, d_neg, 0.5, "subtract", margin=0.05)
    assert loss.item() == pytest.approx((0.10 - 0.12 + 0.05 + 0.0) / 2)   # the second sample is past the margin
    loss.backward()
    assert d_pos.grad.tolist() == [0.5, 0.0] and d_neg.grad.tolist() == [-0.5, 0.0]


def test_contrastive_loss_averages_per_sample_reciprocals():
    d_pos, d_neg = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 4.0])
    # mean(1 + 1/2, 3 + 1/4): the reciprocal is taken per sample, not of the batch mean.
    assert contrastive_loss(d_pos, d_neg, 1.0).item() == pytest.approx((1.5 + 3.25) / 2)


def test_the_batch_reciprocal_takes_one_batch_distance():
    d_pos, d_neg = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 4.0])
    # 2 + 1 / mean(2, 4): the reciprocal of the batch's MSE, not the mean of per-sample reciprocals.
    assert contrastive_loss(d_pos, d_neg, 1.0, reciprocal_of="batch").item() == pytest.approx(2 + 1 / 3)
    with pytest.raises(ValueError, match="reciprocal_of"):
        contrastive_loss(d_pos, d_neg, 1.0, reciprocal_of="mean")


def test_reciprocal_stays_finite_when_negative_collapses():
    loss = contrastive_loss(torch.tensor([0.0]), torch.tensor([0.0]), 1e-5)
    assert torch.isfinite(loss)


def test_reciprocal_still_pushes_when_negative_distance_is_tiny():
    # A collapsed mapper (x̂* ~ x̂-) must get the strongest push, not a clamped, zero gradient.
    d_neg = torch.tensor([1e-9], dtype=torch.float64, requires_grad=True)
    contrastive_loss(torch.tensor([0.0], dtype=torch.float64), d_neg, 1e-5).backward()
    assert d_neg.grad.item() == pytest.approx(-1e-5 / (1e-9 + 1e-12) ** 2)


def test_negative_weight_schedule_values():
    assert negative_weight(250, 1000, 1e-5, 2.0) == pytest.approx(1e-5 * 0.25 ** 2)
    assert negative_weight(0, 1000, 1e-5, 2.0) == 0.0
    assert negative_weight(1000, 1000, 1e-5, 2.0) == pytest.approx(1e-5)
    assert negative_weight(500, 1000, 1e-4, 1.0) == pytest.approx(5e-5)
    assert negative_weight(10, 1000, 1e-5, 2.0, schedule=False) == 1e-5


def test_ddim_x0_inverts_eq1_for_epsilon_and_v():
    torch.manual_seed(0)
    x, eps = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    a = torch.tensor([0.64, 0.25])
    ab = a.reshape(-1, 1, 1, 1)
    x_t = ab.sqrt() * x + (1 - ab).sqrt() * eps
    torch.testing.assert_close(ddim_x0(eps, x_t, a, "epsilon"), x)
    v = ab.sqrt() * eps - (1 - ab).sqrt() * x
    torch.testing.assert_close(ddim_x0(v, x_t, a, "v_prediction"), x)
    with pytest.raises(ValueError, match="prediction_type"):
        ddim_x0(eps, x_t, a, "flow")


def test_background_loss_hand_value():
    bg = 1 - M
    # (x̂*, x̂1): X vs 0 on the off-diagonal -> (4 + 9) / 4; (x̂+, x̂2) identical -> 0; (x̂-, x̂1) same as first.
    value = background_loss(X, X, X, ZERO, X, bg)
    assert value.item() == pytest.approx(2 * 13 / 4)


def test_total_loss_eq9():
    assert total_loss(torch.tensor(2.0), torch.tensor(0.5), 1.0, 30.0).item() == pytest.approx(17.0)
    assert total_loss(torch.tensor(2.0), None, 3.0, 30.0).item() == pytest.approx(6.0)


def _terms(config, step=500):
    torch.manual_seed(1)
    xa, xp, xn, r1, r2 = (torch.randn(2, 4, 4, 4) for _ in range(5))
    mask = (torch.rand(2, 1, 4, 4) > 0.5).float()
    return cocoins_loss(xa, xp, xn, r1, r2, mask, step, 1000, config)


def test_each_switch_changes_only_its_term():
    base = LossConfig(gamma=1e-1)
    ref = _terms(base)
    no_bg = _terms(dataclasses.replace(base, background=False))
    assert no_bg.loss_back is None and torch.equal(no_bg.loss_con, ref.loss_con)
    no_sched = _terms(dataclasses.replace(base, schedule=False))
    assert no_sched.lambda_neg == pytest.approx(1e-1) and ref.lambda_neg == pytest.approx(1e-1 * 0.25)
    assert torch.equal(no_sched.loss_back, ref.loss_back) and not torch.equal(no_sched.loss_con, ref.loss_con)
    no_mask = _terms(dataclasses.replace(base, mask=False))
    # The mask switch changes the contrastive distances; the background term keeps its own mask 1 - m.
    assert torch.equal(no_mask.loss_back, ref.loss_back) and not torch.equal(no_mask.d_pos, ref.d_pos)
    heavier = _terms(dataclasses.replace(base, lambda_back=60.0))
    torch.testing.assert_close(heavier.loss - ref.loss, 30.0 * ref.loss_back)
    pos_only = _terms(dataclasses.replace(base, negative="none"))
    torch.testing.assert_close(pos_only.loss_con, ref.d_pos)
