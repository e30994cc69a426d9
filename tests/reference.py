"""Slow reference losses written directly from the papers' equations.

Explicit Python loops over anchors t and partners p, plain exponentials and logarithms (no
log-sum-exp tricks), float64. Used only by the tests to check the fast implementations in
``sincere.losses``. Inputs are flat: z of shape (N, D), labels of length N.
"""

from __future__ import annotations

import torch


def _sets(labels, t):
    n = len(labels)
    positives = [p for p in range(n) if p != t and labels[p] == labels[t]]
    negatives = [j for j in range(n) if labels[j] != labels[t]]
    return positives, negatives


def _negative_mass(z, t, negatives, tau, beta, detach_weights):
    """sum_{n in N_t} e^{s_tn}, or Jiang et al.'s tilted |N_t| sum_n w e^{s} / sum_n w."""
    if beta == 0:
        return sum(torch.exp(z[t] @ z[j] / tau) for j in negatives)
    weights = [torch.exp(beta * (z[t] @ z[j]) / tau) for j in negatives]
    if detach_weights:
        weights = [w.detach() for w in weights]
    numerator = sum(w * torch.exp(z[t] @ z[j] / tau) for w, j in zip(weights, negatives))
    return len(negatives) * numerator / sum(weights)


def anchor_terms(z, labels, tau, kind="sincere", eps=0.0, beta=0.0, detach_weights=False):
    """Per-anchor losses L(z_t) (Feeney & Hughes, Eq. 12 inner term / Eq. 3) and a validity mask.

    kind: 'sincere' (denominator e^{s_tp} + sum over N_t; eps and beta modify it) or 'supcon'
    (denominator sum over every i != t).
    """
    n = len(labels)
    out, valid = [], []
    for t in range(n):
        positives, negatives = _sets(labels, t)
        if not positives:
            out.append(z.sum() * 0.0)
            valid.append(False)
            continue
        total = 0.0
        for p in positives:
            numerator = torch.exp(z[t] @ z[p] / tau)
            if kind == "supcon":
                denominator = sum(torch.exp(z[t] @ z[i] / tau) for i in range(n) if i != t)
            else:
                denominator = torch.exp((z[t] @ z[p] / tau) - eps)
                if negatives:
                    denominator = denominator + _negative_mass(
                        z, t, negatives, tau, beta, detach_weights)
            total = total - torch.log(numerator / denominator)
        out.append(total / len(positives))
        valid.append(True)
    return torch.stack(out), torch.tensor(valid)


def reference_loss(z, labels, tau, **kwargs):
    """Eq. 12: mean over anchors that have a positive (zero if none has)."""
    terms, valid = anchor_terms(z, labels, tau, **kwargs)
    if not valid.any():
        return z.sum() * 0.0
    return terms[valid].mean()


def eq13_gradient(z, labels, tau, t):
    """Feeney & Hughes Eq. 13: d L_SINCERE(z_t) / d z_t, written out term by term."""
    positives, negatives = _sets(labels, t)
    grad = torch.zeros_like(z[t])
    for p in positives:
        denominator = sum(torch.exp(z[t] @ z[i] / tau) for i in negatives + [p])
        g_p = z[p] * (torch.exp(z[t] @ z[p] / tau) / denominator - 1)
        g_p = g_p + sum(z[j] * torch.exp(z[t] @ z[j] / tau) for j in negatives) / denominator
        grad = grad + g_p
    return grad / (tau * len(positives))


def eq14_gradient(z, labels, tau, t):
    """Feeney & Hughes Eq. 14 (Khosla et al.): d L_SupCon(z_t) / d z_t. The sums 'over I' run over
    every i != t, as in Eq. 3's denominator (P_t and N_t)."""
    positives, negatives = _sets(labels, t)
    others = [i for i in range(len(labels)) if i != t]
    denominator = sum(torch.exp(z[t] @ z[i] / tau) for i in others)
    grad = torch.zeros_like(z[t])
    for p in positives:
        grad = grad + z[p] * (torch.exp(z[t] @ z[p] / tau) / denominator - 1 / len(positives))
    grad = grad + sum(z[j] * torch.exp(z[t] @ z[j] / tau) for j in negatives) / denominator
    return grad / tau


def jiang_reference_loss(features, labels, temperature, beta, detach_weights=False):
    """Jiang et al.'s H-SCL / H-UCL as their public code computes it, written out pair by pair:
    -(1 / sum_t |P_t|) sum_t sum_{p in P_t} log( e^{s_tp} / (e^{s_tp} + N m_t) ), with
    N = n - n_views (every view of every other image) and m_t the e^{beta s}-tilted mean of
    e^{s_tj} over the negatives j in N_t (weights detached or not). ``labels=None``: one class
    per image (H-UCL). beta = 0 is their SCL / UCL."""
    n_images, n_views, dim = features.shape
    z = features.transpose(0, 1).reshape(-1, dim)
    lab = (torch.arange(n_images) if labels is None else torch.as_tensor(labels)).repeat(n_views)
    n = len(lab)
    scale = n - n_views
    s = z @ z.T / temperature
    total, pairs = 0.0, 0
    for t in range(n):
        negatives = [j for j in range(n) if lab[j] != lab[t]]
        w = torch.exp(beta * s[t, negatives])
        if detach_weights:
            w = w.detach()
        mean = (w * torch.exp(s[t, negatives])).sum() / w.sum()
        for p in range(n):
            if p != t and lab[p] == lab[t]:
                total = total - torch.log(torch.exp(s[t, p])
                                          / (torch.exp(s[t, p]) + scale * mean))
                pairs += 1
    return total / pairs
