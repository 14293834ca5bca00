"""RQ-VAE (TIGER, GLASS §3): an MLP autoencoder whose latent is residually quantized.

Per level l with codebook C_l: ``code_l = argmin ||r_l - C_l[k]||``, ``r_{l+1} = r_l - C_l[code_l]``.
Loss = reconstruction MSE + Σ_l (||sg(r_l) - q_l||² + β ||r_l - sg(q_l)||²), gradients reach the
encoder through the straight-through estimator. Codebooks start from residual k-means on the
first encoder outputs; a code unused during an epoch is revived on a random residual of its level.
"""

from __future__ import annotations

import torch
from torch import nn

from glasskit.tokenize.rqkmeans import rq_kmeans


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    def __init__(self, d_in: int, hidden: list[int], latent: int, sizes: list[int],
                 beta: float = 0.25):
        super().__init__()
        self.encoder = mlp([d_in, *hidden, latent])
        self.decoder = mlp([latent, *reversed(hidden), d_in])
        self.codebooks = nn.ParameterList([nn.Parameter(torch.randn(k, latent) * 0.1)
                                           for k in sizes])
        self.beta = beta

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                  list[torch.Tensor]]:
        """``(z_q, codes (n, L), vq loss, residual at each level)``."""
        residual, z_q = z, torch.zeros_like(z)
        codes, residuals = [], []
        loss = z.new_zeros(())
        for book in self.codebooks:
            residuals.append(residual)
            d = residual.pow(2).sum(1, keepdim=True) - 2 * residual @ book.T + book.pow(2).sum(1)
            code = d.argmin(1)
            q = book[code]
            loss = loss + (residual.detach() - q).pow(2).sum(1).mean() \
                + self.beta * (residual - q.detach()).pow(2).sum(1).mean()
            z_q = z_q + q
            residual = residual - q.detach()
            codes.append(code)
        z_st = z + (z_q - z).detach()  # straight-through
        return z_st, torch.stack(codes, 1), loss, residuals

    def forward(self, x: torch.Tensor):
        z = self.encoder(x)
        z_q, codes, vq_loss, residuals = self.quantize(z)
        return self.decoder(z_q), codes, vq_loss, residuals

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, seed: int) -> None:
        _, books, _ = rq_kmeans(self.encoder(x), [len(b) for b in self.codebooks], seed=seed,
                                iters=20)
        for param, book in zip(self.codebooks, books):
            param.copy_(book)


def train_rqvae(x: torch.Tensor, sizes: list[int], hidden: list[int], latent: int,
                epochs: int, lr: float, batch_size: int, beta: float, seed: int,
                revive: bool = True) -> tuple[RQVAE, dict]:
    """Train on the rows of ``x`` (on x's device). Returns the model and a training log."""
    torch.manual_seed(seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    model = RQVAE(x.shape[1], hidden, latent, sizes, beta).to(x.device)
    model.init_codebooks(x, seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = x.shape[0]
    log: dict[str, list[float]] = {"loss": [], "recon": [], "dead_revived": []}
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen).to(x.device)
        used = [torch.zeros(len(b), dtype=torch.bool, device=x.device) for b in model.codebooks]
        total = recon_total = 0.0
        last_residuals: list[torch.Tensor] = []
        for start in range(0, n, batch_size):
            batch = x[perm[start:start + batch_size]]
            out, codes, vq_loss, residuals = model(batch)
            recon = (out - batch).pow(2).sum(1).mean()
            loss = recon + vq_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for level, u in enumerate(used):
                u[codes[:, level]] = True
            total += float(loss.detach()) * len(batch)
            recon_total += float(recon.detach()) * len(batch)
            last_residuals = residuals
        revived = 0
        if revive and epoch < epochs - 1:  # the final codes are never re-drawn
            with torch.no_grad():
                for level, (book, u) in enumerate(zip(model.codebooks, used)):
                    dead = (~u).nonzero().squeeze(1)
                    if len(dead):
                        pool = last_residuals[level].detach()
                        pick = torch.randint(len(pool), (len(dead),), generator=gen).to(x.device)
                        book[dead] = pool[pick]
                        revived += len(dead)
        log["loss"].append(total / n)
        log["recon"].append(recon_total / n)
        log["dead_revived"].append(revived)
    return model, log
