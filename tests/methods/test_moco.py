"""MoCo's symmetric loss: both directions against the same queue state, the step's keys enqueued once after."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssl_transfer.backbones import build_backbone
from ssl_transfer.methods import METHODS, build_method

SHAPE = (1, 8, 8)


def _infonce(q, k, negatives, t):
    """Reference: -log softmax of the positive among [positive, negatives], written out from the MoCo paper."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    pos = torch.exp((q * k).sum(1) / t)
    neg = torch.exp(q @ negatives.T / t).sum(1)
    return (-torch.log(pos / (pos + neg))).mean()


def _moco(symmetric: bool = True, queue_size: int = 64):
    torch.manual_seed(0)
    cfg = METHODS.get("moco").config_cls(queue_size=queue_size, symmetric=symmetric)
    return build_method(cfg, build_backbone("cnn_tiny", SHAPE), SHAPE)


def test_symmetric_loss_scores_both_directions_against_the_queue_before_the_step():
    m = _moco()
    x0, x1 = torch.randn(8, *SHAPE), torch.randn(8, *SHAPE)
    queue0 = m.queue.clone()
    loss = m.training_step([x0, x1])["loss"]
    q0, q1, k0, k1 = m.query(x0), m.query(x1), m.key(x0), m.key(x1)
    expected = 0.5 * (_infonce(q0, k1, queue0, m.cfg.temperature) + _infonce(q1, k0, queue0, m.cfg.temperature))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_no_query_meets_its_own_positive_key_among_the_negatives():
    m = _moco()
    x0 = torch.randn(8, *SHAPE)
    queue0 = m.queue.clone()
    # Identical views: each query's key is (nearly) itself. Had the first direction enqueued its keys before the
    # second ran, the second direction's negatives would hold its positives (cosine 1, loss >= log 2).
    loss = m.training_step([x0, x0.clone()])["loss"]
    q, k = m.query(x0), m.key(x0)
    torch.testing.assert_close(loss, _infonce(q, k, queue0, m.cfg.temperature), rtol=1e-5, atol=1e-6)


def test_keys_enqueued_once_per_step_after_both_directions():
    m = _moco(queue_size=64)
    x0, x1 = torch.randn(8, *SHAPE), torch.randn(8, *SHAPE)
    m.training_step([x0, x1])
    assert int(m.criterion.memory_bank.bank_ptr) == 16
    keys = F.normalize(torch.cat([m.key(x1), m.key(x0)]), dim=1)
    torch.testing.assert_close(m.queue[:16], keys, rtol=1e-5, atol=1e-6)


def test_one_direction_enqueues_only_the_keys_it_used():
    m = _moco(symmetric=False)
    x0, x1 = torch.randn(8, *SHAPE), torch.randn(8, *SHAPE)
    queue0 = m.queue.clone()
    loss = m.training_step([x0, x1])["loss"]
    torch.testing.assert_close(loss, _infonce(m.query(x0), m.key(x1), queue0, m.cfg.temperature), rtol=1e-5, atol=1e-6)
    assert int(m.criterion.memory_bank.bank_ptr) == 8


def test_queue_is_in_the_state_dict():
    m = _moco()
    m.training_step([torch.randn(8, *SHAPE), torch.randn(8, *SHAPE)])
    sd = m.state_dict()
    assert torch.equal(sd["criterion.memory_bank.bank"], m.queue)
    assert int(sd["criterion.memory_bank.bank_ptr"]) == 16


def test_shuffle_bn_a_query_and_its_key_never_share_batch_statistics():
    """bn_splits: queries in sub-batches with their own BatchNorm statistics, keys in sub-batches of a shuffled
    batch (the authors' single-GPU shuffle-BN), rows returned in input order."""
    torch.manual_seed(0)
    cfg = METHODS.get("moco").config_cls(queue_size=256, bn_splits=4)
    m = build_method(cfg, build_backbone("cnn_tiny", SHAPE), SHAPE)
    x = torch.randn(64, *SHAPE)
    q = m.in_splits(m.query, x, shuffle=False)
    torch.testing.assert_close(q[16:32], m.query(x[16:32]))  # its own sub-batch's statistics
    assert not torch.allclose(q[16:32], m.query(x)[16:32], atol=1e-4)  # not the whole batch's
    torch.manual_seed(1)
    k = m.in_splits(m.key, x, shuffle=True)
    torch.manual_seed(1)
    perm = torch.randperm(64)
    first = perm[:16]  # the images whose keys shared the first sub-batch
    torch.testing.assert_close(k[first], m.key(x[first]))
    assert len(set(first.tolist()) & set(range(16))) < 16  # not the queries' sub-batch
    loss = m.training_step([x, torch.randn(64, *SHAPE)])["loss"]
    assert torch.isfinite(loss) and int(m.criterion.memory_bank.bank_ptr) == 128
