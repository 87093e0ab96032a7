"""The unnormalised energies U1-U4 of Rezende & Mohamed (2015, Table 1) and FFJORD's toy samplers
(Grathwohl et al. 2019), written with explicit torch generators. ``dgm.core.data`` registers them."""

from __future__ import annotations

import math

import torch


def _w1(z):
    return torch.sin(2 * math.pi * z[:, 0] / 4)


def _w2(z):
    return 3 * torch.exp(-0.5 * ((z[:, 0] - 1) / 0.6) ** 2)


def _w3(z):
    return 3 * torch.sigmoid((z[:, 0] - 1) / 0.3)


def U1(z):
    r = z.norm(dim=1)
    two = torch.stack([-0.5 * ((z[:, 0] - 2) / 0.6) ** 2, -0.5 * ((z[:, 0] + 2) / 0.6) ** 2], 1)
    return 0.5 * ((r - 2) / 0.4) ** 2 - torch.logsumexp(two, 1)


def U2(z):
    return 0.5 * ((z[:, 1] - _w1(z)) / 0.4) ** 2


def U3(z):
    a = -0.5 * ((z[:, 1] - _w1(z)) / 0.35) ** 2
    b = -0.5 * ((z[:, 1] - _w1(z) + _w2(z)) / 0.35) ** 2
    return -torch.logsumexp(torch.stack([a, b], 1), 1)


def U4(z):
    a = -0.5 * ((z[:, 1] - _w1(z)) / 0.4) ** 2
    b = -0.5 * ((z[:, 1] - _w1(z) + _w3(z)) / 0.35) ** 2
    return -torch.logsumexp(torch.stack([a, b], 1), 1)


def _randn(n, g, device, d=2):
    return torch.randn(n, d, generator=g, device=device)


def _rand(n, g, device):
    return torch.rand(n, generator=g, device=device)


def swissroll(n, g, device):
    t = 1.5 * math.pi * (1 + 2 * _rand(n, g, device))
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1)
    return (x + 1.0 * _randn(n, g, device)) / 5


def circles(n, g, device):
    t = 2 * math.pi * _rand(n, g, device)
    r = torch.where(_rand(n, g, device) < 0.5, 1.0, 0.5)
    x = torch.stack([r * torch.cos(t), r * torch.sin(t)], 1)
    return (x + 0.08 * _randn(n, g, device)) * 3


def rings(n, g, device):
    t = 2 * math.pi * _rand(n, g, device)
    radii = torch.tensor([1.0, 0.75, 0.5, 0.25], device=device)
    r = radii[torch.randint(0, 4, (n,), generator=g, device=device)]
    x = torch.stack([r * torch.cos(t), r * torch.sin(t)], 1) * 3
    return x + 0.08 * _randn(n, g, device)


def moons(n, g, device):
    t = math.pi * _rand(n, g, device)
    upper = _rand(n, g, device) < 0.5
    outer = torch.stack([torch.cos(t), torch.sin(t)], 1)
    inner = torch.stack([1 - torch.cos(t), 1 - torch.sin(t) - 0.5], 1)
    x = torch.where(upper[:, None], outer, inner) + 0.1 * _randn(n, g, device)
    return x * 2 + torch.tensor([-1.0, -0.2], device=device)


def pinwheel(n, g, device, radial_std=0.3, tangential_std=0.1, arms=5, rate=0.25):
    rads = torch.linspace(0, 2 * math.pi, arms + 1, device=device)[:-1]
    feats = _randn(n, g, device) * torch.tensor([radial_std, tangential_std], device=device)
    feats[:, 0] += 1.0
    labels = torch.randint(0, arms, (n,), generator=g, device=device)
    angles = rads[labels] + rate * torch.exp(feats[:, 0])
    c, s = torch.cos(angles), torch.sin(angles)
    rot = torch.stack([torch.stack([c, -s], 1), torch.stack([s, c], 1)], 1)  # (n, 2, 2)
    return 2 * (rot @ feats[:, :, None]).squeeze(-1)


def two_spirals(n, g, device):
    m = n // 2 + 1
    t = torch.sqrt(_rand(m, g, device)) * 540 * (2 * math.pi) / 360
    d1 = torch.stack([-torch.cos(t) * t, torch.sin(t) * t], 1) + _rand(2 * m, g, device).view(m, 2) * 0.5
    x = torch.cat([d1, -d1], 0)[:n] / 3
    x = x + 0.1 * _randn(n, g, device)
    perm = torch.randperm(n, generator=g, device=device)
    return x[perm]
