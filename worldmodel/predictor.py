"""Action-conditioned causal transformer predicting the next embedding.

    emb (B, T, D) --in_proj + pos--> (B, T, W) --[AdaLN-zero blocks, causal]--> norm, linear
        --> projector --> (B, T, D)      (output t predicts embedding t+1)
    actions (B, T, A_block) --ActionEncoder--> (B, T, W): the conditioning of each block
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from worldmodel.config import WorldModelConfig
from worldmodel.encoder import Attention, FeedForward, Projector, matmul_attention, use_matmul_attention


class ActionEncoder(nn.Module):
    """MLP over one action block: (..., frameskip * action_dim) -> (..., W)."""

    def __init__(self, block_dim: int, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(block_dim, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        """actions (..., A_block) -> (..., W)."""
        return self.net(actions)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """AdaLN modulation: x * (1 + scale) + shift, all (B, T, W)."""
    return x * (1 + scale) + shift


class AdaLNBlock(nn.Module):
    """Causal transformer block with AdaLN-zero conditioning (as in DiT).

    The conditioning vector c (B, T, W) gives a shift, scale and gate for both the
    attention and the MLP branch. The modulation layer is zero-initialised, so every
    block starts as the identity.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float,
                 head_dim: int | None = None, mlp_dim: int | None = None):
        super().__init__()
        self.ln1 = nn.LayerNorm(width, elementwise_affine=False)
        self.ln2 = nn.LayerNorm(width, elementwise_affine=False)
        self.attn = Attention(width, heads, dropout, causal=True, head_dim=head_dim)
        self.mlp = FeedForward(width, mlp_ratio, dropout, hidden=mlp_dim)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x (B, T, W), c (B, T, W) -> (B, T, W)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.ln1(x), shift1, scale1))
        return x + gate2 * self.mlp(modulate(self.ln2(x), shift2, scale2))


class Predictor(nn.Module):
    """Causal, action-conditioned predictor over at most ``context + pred_steps`` time steps."""

    def __init__(self, config: WorldModelConfig):
        super().__init__()
        c, w = config, config.predictor_width
        self.max_len = c.context + c.pred_steps
        self.context = c.context
        self.action_encoder = ActionEncoder(c.block_dim, w)
        self.in_proj = nn.Linear(c.embed_dim, w)
        self.pos = nn.Parameter(torch.randn(1, self.max_len, w) * 0.02)
        self.blocks = nn.ModuleList(
            AdaLNBlock(w, c.predictor_heads, c.mlp_ratio, c.dropout, c.predictor_head_dim, c.predictor_mlp_dim)
            for _ in range(c.predictor_depth)
        )
        self.ln = nn.LayerNorm(w)
        self.out_proj = nn.Linear(w, c.embed_dim)
        self.projector = Projector(c.embed_dim, c.projector_hidden, c.embed_dim)
        self.residual = c.predictor_residual

    def forward(self, emb: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """emb (B, T, D), actions (B, T, A_block) -> next-embedding predictions (B, T, D).

        Output t depends only on emb[:, :t+1] and actions[:, :t+1] (in eval mode; in
        train mode the projector's BatchNorm mixes statistics over the whole batch).
        """
        B, T, _ = emb.shape
        if T > self.max_len:
            raise ValueError(
                f"the predictor handles at most context + pred_steps = {self.max_len} time steps, got T={T}"
            )
        x = self.in_proj(emb) + self.pos[:, :T]  # (B, T, W)
        c = self.action_encoder(actions)  # (B, T, W)
        for block in self.blocks:
            x = block(x, c)
        return self._head(x, emb)

    def _head(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Block outputs x (B, T, W) of the tokens whose embeddings are emb (B, T, D) -> predictions (B, T, D)."""
        B, T = x.shape[:2]
        x = self.out_proj(self.ln(x))  # (B, T, D)
        out = self.projector(x.reshape(B * T, -1)).view(B, T, -1)
        # Residual: the network only has to model how the embedding moves.
        return emb + out if self.residual else out

    def teacher_forced(self, emb: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """emb (B, T, D), actions (B, T, A_block) -> predictions (B, T, D), each from planning's history.

        Output t sees the last ``min(t + 1, context)`` tokens (s = max(0, t + 1 - context) .. t)
        at positions 0.., exactly the window ``rollout`` (and ``forward`` on that window) gives a
        prediction made from the same embeddings and blocks; T is not limited. For T <= context
        this is ``forward``. Otherwise the windows of ``context`` tokens ending at t =
        context - 1 .. T - 1 run as one batch: the first gives outputs 0 .. context - 1 (causal),
        each later one its last output; in_proj and the action encoding are computed once per
        token. The final norm, out_proj and projector see exactly the T predictions, so the
        projector's BatchNorm statistics in train mode are over B * T rows as in ``forward``.
        """
        B, T, _ = emb.shape
        c = self.context
        if T <= c:
            return self.forward(emb, actions)
        n = T - c + 1  # windows
        idx = torch.arange(c, device=emb.device)[None, :] + torch.arange(n, device=emb.device)[:, None]  # (n, c)
        tokens = self.in_proj(emb)[:, idx]  # (B, n, c, W)
        cond = self.action_encoder(actions)[:, idx]  # (B, n, c, W)
        W = tokens.shape[-1]
        x = tokens.reshape(B * n, c, W) + self.pos[:, :c]
        cond = cond.reshape(B * n, c, W)
        for block in self.blocks:
            x = block(x, cond)
        x = x.view(B, n, c, W)
        x = torch.cat([x[:, 0], x[:, 1:, -1]], dim=1)  # (B, T, W): window 0's outputs, then each window's last
        return self._head(x, emb)

    # ------------------------------------------------------------ fast rollout
    # Planning rolls the predictor out over a sliding window of at most ``context`` tokens.
    # Token j of the sequence pairs embedding e_j (a context embedding for j < k, else the
    # prediction p_{j-k}) with action a_j (a past block for j < k - 1, else the candidate's
    # block f_{j-k+1}); step h feeds tokens [s_h, k + h - 1] (s_h = max(0, k + h - context))
    # at positions 0.. and reads the last output. ``forward`` on that window, repeated for
    # every step, computes all tokens of all layers for all B * S candidates. Causality lets
    # ``rollout`` do less for the same result:
    #   * the window's leading tokens j <= k - 2 depend on no candidate: they are computed
    #     for B (not B * S), once per step, and only their keys/values are kept
    #     (``rollout_prefix``; reusable across calls with the same context);
    #   * the AdaLN modulation ada(action_encoder(f_i)) of each candidate block is computed
    #     once, not once per window that holds it (it does not depend on the position);
    #     likewise in_proj of each embedding;
    #   * in the last block, the non-last tokens are needed only as keys/values, and the
    #     final norm, out_proj and projector only for the last token.
    # Tokens that do depend on the candidate change position as the window slides (learned
    # absolute positions), so they are recomputed at each step: that is the remaining work.
    # On CPU the attention over those few keys runs token-major (``_attend_few``), and
    # a bf16 ``PlanningModel``'s linear layers are oneDNN's (``worldmodel.cpu_fused``).

    def rollout_prefix(self, ctx: torch.Tensor, ctx_actions: torch.Tensor, steps: int) -> list:
        """Keys/values of the candidate-independent leading tokens of each step's window.

        Args:
            ctx: (B, k, D) context embeddings (k <= context), ctx_actions: (B, k - 1, A_block).
            steps: H, the rollout length.

        Returns:
            one entry per step h: None when the window has no such token, else a list over
            blocks of (keys, values), each (B, heads, n_h, head_dim).
        """
        B, k, _ = ctx.shape
        out: list = []
        for h in range(steps):
            s = max(0, k + h - self.context)
            n = max(0, k - 1 - s)
            if n == 0:
                out.append(None)
                continue
            x = self.in_proj(ctx[:, s : k - 1]) + self.pos[:, :n]  # (B, n, W)
            c = self.action_encoder(ctx_actions[:, s : k - 1])  # (B, n, W)
            kvs = []
            for i, block in enumerate(self.blocks):
                shift1, scale1, gate1, shift2, scale2, gate2 = block.ada(c).chunk(6, dim=-1)
                attn = block.attn
                q, kk, v = _heads(attn.qkv(modulate(block.ln1(x), shift1, scale1)), 3, attn.heads, attn.head_dim)
                kvs.append((kk, v))
                if i < len(self.blocks) - 1:  # the last block's outputs are never read
                    y = F.scaled_dot_product_attention(q, kk, v, is_causal=True)  # (B, heads, n, hd)
                    x = x + gate1 * attn.proj(y.transpose(1, 2).reshape(B, n, attn.inner))
                    x = x + gate2 * block.mlp(modulate(block.ln2(x), shift2, scale2))
            out.append(kvs)
        return out

    def rollout(
        self,
        ctx: torch.Tensor,
        ctx_actions: torch.Tensor,
        future: torch.Tensor,
        prefix: list | None = None,
    ) -> torch.Tensor:
        """Predict H embeddings per candidate, equal to sliding ``forward`` over the window.

        Args:
            ctx: (B, k, D) context embeddings, k <= context, oldest first.
            ctx_actions: (B, k - 1, A_block) blocks executed between them.
            future: (B, S, H, A_block) candidate blocks.
            prefix: ``rollout_prefix(ctx, ctx_actions, H)`` if already computed.

        Returns:
            (B, S, H, D) predicted embeddings. Eval-mode semantics (BatchNorm running
            statistics, no dropout): use it only when ``not self.training``.
        """
        B, k, D = ctx.shape
        S, H, A = future.shape[1:]
        BS, depth = B * S, len(self.blocks)
        if prefix is None:
            prefix = self.rollout_prefix(ctx, ctx_actions, H)
        c = self.action_encoder(future.reshape(BS, H, A))  # (BS, H, W)
        W = c.shape[-1]
        mods = []  # depth x (BS, H, 6, W): shift1, 1 + scale1, gate1, shift2, 1 + scale2, gate2 per candidate block
        for block in self.blocks:
            mod = block.ada(c).view(BS, H, 6, W)
            mod[:, :, 1::3] += 1  # modulate(x, shift, scale) = addcmul(shift, x, 1 + scale)
            mods.append(mod)
        current = ctx[:, k - 1].unsqueeze(1).expand(B, S, D).reshape(BS, D)  # e_{k-1} per candidate
        embs = [current]  # e_j for j >= k - 1: the current embedding, then the predictions
        inputs = [self.in_proj(ctx[:, k - 1]).unsqueeze(1).expand(B, S, -1).reshape(BS, -1)]  # in_proj(e_j)
        preds = []
        for h in range(H):
            s = max(0, k + h - self.context)
            n = max(0, k - 1 - s)  # candidate-independent tokens, in the prefix
            j0 = max(s, k - 1)  # first candidate-dependent token
            m = k + h - j0  # candidate-dependent tokens, positions n .. n + m - 1
            a0 = j0 - (k - 1)  # their first action/embedding index into mods/inputs
            x = torch.stack(inputs[a0 : h + 1], dim=1) + self.pos[:, n : n + m]  # (BS, m, W)
            for i, block in enumerate(self.blocks):
                attn, last = block.attn, i == depth - 1
                shift1, scale1, gate1, shift2, scale2, gate2 = mods[i][:, a0 : h + 1].unbind(2)  # (BS, m, W)
                hmod = torch.addcmul(shift1, block.ln1(x), scale1)  # (BS, m, W)
                inner, heads, hd = attn.inner, attn.heads, attn.head_dim
                if last and m > 1:  # only the last token's output is read: the others give keys/values
                    q = _rows(attn.qkv, hmod[:, -1:], 0, inner)  # (BS, 1, inner)
                    kv = _rows(attn.qkv, hmod, inner, 3 * inner)  # (BS, m, 2 * inner)
                else:
                    qkv = attn.qkv(hmod)  # (BS, m, 3 * inner)
                    q, kv = qkv[..., :inner], qkv[..., inner:]
                mq = q.shape[1]
                # the last token sees every key; otherwise query i sits at position n + i
                if use_few_key_attention(q):  # CPU: few keys per query, token-major
                    allow = None if mq == 1 else [[j <= n + i for j in range(n + m)] for i in range(mq)]
                    kv = kv.view(B, S, m, 2, heads, hd)
                    pk, pv = prefix[h][i] if n else (None, None)  # (B, heads, n, hd): shared by the candidates
                    keys = [pk[:, :, j].reshape(B, 1, 1, heads, hd) for j in range(n)]
                    values = [pv[:, :, j].reshape(B, 1, 1, heads, hd) for j in range(n)]
                    keys += [kv[:, :, j : j + 1, 0] for j in range(m)]  # (B, S, 1, heads, hd) each
                    values += [kv[:, :, j : j + 1, 1] for j in range(m)]
                    y = _attend_few(q.view(B, S, mq, heads, hd), keys, values, allow).view(BS, mq, inner)
                else:
                    mask = None if mq == 1 else torch.ones(mq, n + m, dtype=torch.bool, device=x.device).tril(n)
                    qh = _heads(q, 1, heads, hd)[0]  # (BS, heads, mq, hd)
                    kk, v = _heads(kv, 2, heads, hd)  # (BS, heads, m, hd)
                    if n:
                        pk, pv = prefix[h][i]  # (B, heads, n, hd)
                        kk = torch.cat([_expand(pk, S), kk], dim=2)  # (BS, heads, n + m, hd)
                        v = torch.cat([_expand(pv, S), v], dim=2)
                    y = _attend(qh, kk, v, mask).transpose(1, 2).reshape(BS, mq, inner)  # from (BS, heads, mq, hd)
                if last:
                    x, gate1, shift2, scale2, gate2 = (t[:, -1:] for t in (x, gate1, shift2, scale2, gate2))
                x = torch.addcmul(x, gate1, attn.proj(y))
                x = torch.addcmul(x, gate2, block.mlp(torch.addcmul(shift2, block.ln2(x), scale2)))
            out = self.projector(self.out_proj(self.ln(x[:, -1])))  # (BS, D)
            pred = embs[h] + out if self.residual else out
            preds.append(pred)
            embs.append(pred)
            inputs.append(self.in_proj(pred))
        return torch.stack(preds, dim=1).view(B, S, H, D)


def _rows(layer: nn.Linear, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Outputs ``start:stop`` of linear `layer` for x (..., in) -> (..., stop - start); a layer with its
    own ``forward_rows`` (``worldmodel.cpu_fused.PackedLinear``) computes them its way."""
    if hasattr(layer, "forward_rows"):
        return layer.forward_rows(x, start, stop)
    return F.linear(x, layer.weight[start:stop], None if layer.bias is None else layer.bias[start:stop])


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax attention of q (N, h, Lq, d) over k, v (N, h, L, d); mask (Lq, L) bool, True = may attend.

    ``scaled_dot_product_attention``, except where ``use_matmul_attention`` says two batched
    matmuls are faster (bf16 on CPU: with a handful of keys per query the fused kernel there
    costs more than the qkv projection itself, measured 42 ms vs 17 ms, 400 x 16 heads x 3
    tokens, one thread).
    """
    if not use_matmul_attention(q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return matmul_attention(q, k, v, mask)


#: planning rollouts on CPU attend with ``_attend_few`` where ``use_few_key_attention`` says so
#: (False: head-major SDPA / batched matmuls everywhere)
FEW_KEY_ATTENTION = True


def use_few_key_attention(q: torch.Tensor) -> bool:
    """Whether ``Predictor.rollout`` attends token-major (``_attend_few``) for queries `q`: on the CPU
    in bf16 (measured with and without autograd) and in float32 without autograd (one 8 x 300
    LeWorldModel-scale rollout, 2 threads: 3.80 s vs 4.51 s with SDPA; benchmarks/RESULTS.md).
    Elsewhere (GPUs, float32 gradients) the fused SDPA kernels or batched matmuls."""
    if not FEW_KEY_ATTENTION or q.device.type != "cpu":
        return False
    return q.dtype == torch.bfloat16 or (q.dtype == torch.float32 and not torch.is_grad_enabled())


def _attend_few(q: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor],
                mask: torch.Tensor | list[list[bool]] | None) -> torch.Tensor:
    """Softmax attention over a handful of keys, token-major: q (B, S, Lq, h, d); keys and values:
    L tensors each broadcastable to (B, S, 1, h, d) (a history token shared by all S candidates
    stays (B, 1, 1, h, d): never copied per candidate); mask (Lq, L) bool, True = may attend (a
    tensor or nested lists: the rollout passes lists, read here without a tensor round trip)
    -> (B, S, Lq, h, d). Equals ``scaled_dot_product_attention`` up to rounding: in bf16 each
    score is one product-and-sum (accumulated in float32, rounded once to bf16, as a bf16 matmul
    rounds its output), the softmax runs in float32.

    Why: with at most ``context`` keys per query, batched matmuls spend their time on per-matrix
    overhead and on copying the head-major views they need (BS x heads matrices of 3 x 64);
    these elementwise passes read the qkv projection where it lies (benchmarks/RESULTS.md). Each
    query row visits only the keys its mask allows (6 of 9 pairs for 3 causal tokens), and the
    scores are summed in q's dtype: a float32 sum of bf16 products first copies them to float32,
    a third of the scores' time (profiled).
    """
    Lq = q.shape[2]
    scale = q.shape[-1] ** -0.5
    allow = [[True] * len(keys)] * Lq if mask is None else mask.tolist() if torch.is_tensor(mask) else mask
    rows = [[j for j in range(len(keys)) if allow[i][j]] for i in range(Lq)]
    # rows are written into one output without grad; autograd cannot follow out=, so it concatenates
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device) if Lq > 1 and not torch.is_grad_enabled() else None
    ys = []
    for i, allowed in enumerate(rows):
        qi = q[:, :, i : i + 1]  # (B, S, 1, h, d)
        # keys first: each key's scores are one contiguous slab, and the softmax runs across slabs
        # (over a last dimension of 2-3 it costs per-row overhead: 2.5x slower, profiled)
        scores = torch.stack([(qi * keys[j]).sum(-1) for j in allowed])  # (L_i, B, S, 1, h)
        p = (scores.float() * scale).softmax(0).to(q.dtype).unsqueeze(-1)  # (L_i, B, S, 1, h, 1)
        y = torch.mul(p[0], values[allowed[0]], out=None if out is None else out[:, :, i : i + 1])
        for t, j in enumerate(allowed[1:], start=1):
            y.addcmul_(p[t], values[j])  # in place on mul's output, which its backward does not need
        ys.append(y)
    return out if out is not None else (ys[0] if Lq == 1 else torch.cat(ys, dim=2))


def _heads(qkv: torch.Tensor, parts: int, heads: int, head_dim: int) -> tuple[torch.Tensor, ...]:
    """(N, L, parts * heads * head_dim) -> ``parts`` tensors (N, heads, L, head_dim)."""
    N, L, _ = qkv.shape
    return tuple(qkv.reshape(N, L, parts, heads, head_dim).permute(2, 0, 3, 1, 4))


def _expand(t: torch.Tensor, S: int) -> torch.Tensor:
    """(B, ...) -> (B * S, ...), each row repeated S times (sample-major within each b)."""
    return t.unsqueeze(1).expand(t.shape[0], S, *t.shape[1:]).reshape(t.shape[0] * S, *t.shape[1:])
