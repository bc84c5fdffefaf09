"""Large-H regime: the hidden units are split across P programs (design.md §4, "Large H").

When ``W_hh`` no longer fits one program, program ``(p, q)`` owns hidden units
``p*BLOCK_HS .. p*BLOCK_HS+BLOCK_HS-1`` (slice p, *with all G gates of those units*, so the cell
update stays local) and keeps only its part of ``W_hh`` on chip: (BLOCK_H x BLOCK_HS) per gate,
BLOCK_H = padded H. Batch group q takes batch tiles q, q + groups, ... (BLOCK_B sequences each)
in turn within every step, so a few resident programs serve any batch size; per-tile state
(c; dh, dc) therefore lives in global fp32 buffers (L2-resident; each program only touches its
own slice). What crosses programs each step goes through global memory:

forward    every program needs all of h_{t-1}: an exchange buffer ``hdot`` (2, B, H) in the
           weights' dtype (the dot operand; 16-bit halves the tile staged through shared memory),
           next to the fp32 state ``hbuf`` each program only reads its own slice of,
           both double-buffered (step k reads buffer k % 2, writes its slice of (k+1) % 2), so
           one barrier per step suffices: buffer k % 2 is written again only in step k+1, which
           no program starts before all have passed the barrier ending step k (their reads of
           it included).
backward   dh_prev[slice] = sum_j dgates[t][j] W_hh[j, slice] needs the gate gradients of *all*
           units; they are written to ``dgx`` (which the torch GEMMs need anyway), then a
           barrier, then every program reads the full dgates[t] back. Each iteration therefore
           first finishes the previous step (phase A: dh += dgates[t_prev] @ W_hh[:, slice]) and
           then computes its slice of dgates[t] (phase B); a last phase A after the loop gives dh0.

Two modes around the same step body (constexpr ``BARRIER``):

persistent (BARRIER=True)  one launch runs steps [k_begin, k_end); after each step an atomic
           counter barrier per batch group: arrive = atomic_add(+1, release), wait = spin on
           atomic_add(+0, acquire) until the counter reaches (steps done) * P (compared modulo
           2^32: ``counter_reached``); exchange loads use ``.cg`` (L2, not a possibly stale L1).
           Valid only when all programs are resident at once: launch.py launches it
           cooperatively (the driver refuses a grid that cannot be co-resident, instead of
           letting it hang), sizes the grid from the compiled kernel's occupancy, and bounds the
           wait (``max_spins`` polls): a stalled barrier sets ``stall_ptr``, every program skips
           its remaining steps, and the host reruns the layer step-wise. With P = 1 the barrier
           is passed at once, which is how the CPU interpreter (programs run one after another)
           runs it.
           The compiled barrier (checked in the PTX for sm_90): one thread per program does
           ``atom.global.gpu.release.add`` then spins on ``ld.global.gpu.acquire``, between
           two ``bar.sync``.
step-wise (BARRIER=False)  one launch per step (the launch boundary is the barrier): the honest
           fallback when co-residency cannot be guaranteed, and how the interpreter tests P > 1.
"""

import triton
import triton.language as tl

from .cell_step import LSTM, GRU, backward_rows, backward_step, forward_step, load_gate_tiles


@triton.jit
def counter_reached(count, target):
    """Whether an int32 arrival counter ``count`` has reached ``target``, both modulo 2^32.

    The counter of a persistent launch grows by P (programs) per step: past T * P = 2^31 it
    wraps to negative, and a plain ``count >= target`` would pass early (target wrapped) or never
    (count wrapped). The signed difference (count - target) mod 2^32 is right as long as the two
    are less than 2^31 apart; they are at most P apart (programs arriving for the next step)."""
    diff = count.to(tl.uint32, bitcast=True) - target.to(tl.uint32, bitcast=True)
    return diff.to(tl.int32, bitcast=True) >= 0


@triton.jit
def grid_barrier(counter_ptr, stall_ptr, target, max_spins):
    """Arrive at an atomic counter and wait until it reaches ``target`` (wrap-safe), for at most
    ``max_spins`` polls, or until another program reported a stall. Returns 1 when the barrier
    passed, 0 on a stall; a program that gives up sets ``*stall_ptr`` = 1, which makes the others
    give up at their next poll and the host rerun the layer step-wise (launch.py): a program that
    is not resident (the GPU shared with other work) becomes an error, not a hang."""
    tl.debug_barrier()  # every thread of this program has issued its stores
    tl.atomic_add(counter_ptr, 1, sem="release")
    count = tl.atomic_add(counter_ptr, 0, sem="acquire")
    stalled = tl.atomic_add(stall_ptr, 0, sem="relaxed")
    spins = 0
    while (counter_reached(count, target) == 0) & (stalled == 0) & (spins < max_spins):
        count = tl.atomic_add(counter_ptr, 0, sem="acquire")
        stalled = tl.atomic_add(stall_ptr, 0, sem="relaxed")
        spins += 1
    passed = counter_reached(count, target).to(tl.int32)
    tl.atomic_xchg(stall_ptr, 1, sem="relaxed", mask=passed == 0)
    tl.debug_barrier()
    return passed


@triton.jit
def slice_program(B, H: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_HS: tl.constexpr):
    """Program (p, q): slice p of the hidden units, batch group q (tiles q, q + groups, ...) ->
    (q, groups, num_slices, num_tiles, offs_k / mask_k: all units, offs_j / mask_j: the slice)."""
    pid_s = tl.program_id(0)
    pid_g = tl.program_id(1)
    num_slices = tl.num_programs(0)
    groups = tl.num_programs(1)
    num_tiles = (B + BLOCK_B - 1) // BLOCK_B
    offs_k = tl.arange(0, BLOCK_H)
    offs_j = pid_s * BLOCK_HS + tl.arange(0, BLOCK_HS)
    mask_k = offs_k < H
    mask_j = offs_j < H
    return pid_g, groups, num_slices, num_tiles, offs_k, mask_k, offs_j, mask_j


@triton.jit
def slice_tile(tile, B, H: tl.constexpr, BLOCK_B: tl.constexpr, mask_k, offs_j, mask_j):
    """Batch tile ``tile`` of a slice program -> (offs_b (int64 from here on), mask_b, mask_full
    (BLOCK_B, BLOCK_H) over all units, mask (BLOCK_B, BLOCK_HS) over the slice, own_offs = b*H + j)."""
    offs_b = tile * BLOCK_B + tl.arange(0, BLOCK_B).to(tl.int64)
    mask_b = offs_b < B
    mask_full = mask_b[:, None] & mask_k[None, :]
    mask = mask_b[:, None] & mask_j[None, :]
    own_offs = offs_b[:, None] * H + offs_j[None, :]
    return offs_b, mask_b, mask_full, mask, own_offs


@triton.jit(do_not_specialize=["T", "B", "k_begin", "k_end", "max_spins"])
def sliced_forward_kernel(
    gx_ptr,  # (T, B, G*H) as in forward.py
    w_ptr,  # (G*H, H)
    bhn_ptr,  # (H,) GRU only
    hbuf_ptr,  # (2, B, H) fp32 state; hbuf[k_begin % 2] holds the state before step k_begin
    hdot_ptr,  # (2, B, H) the same in the weights' dtype: the tl.dot operand other programs read
    cbuf_ptr,  # (B, H) fp32 LSTM cell state, read at start and written at the end
    len_ptr,  # (B,) int32
    out_ptr,  # (T, B, H)
    saved_ptr,  # (T, B, S*H) fp32
    counter_ptr,  # (batch groups,) int32 zeros, persistent mode only
    stall_ptr,  # (1,) int32 zero; set to 1 by a program whose barrier wait timed out
    T,
    B,
    k_begin,
    k_end,
    max_spins,  # polls before a barrier wait counts as a stall
    H: tl.constexpr,
    G: tl.constexpr,
    S: tl.constexpr,
    CELL: tl.constexpr,
    REVERSE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_HS: tl.constexpr,
    BARRIER: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    WIDEN_WEIGHTS: tl.constexpr,
    FMA_KS: tl.constexpr,  # K chunks of the fp32 FMA dot (launch.kernel_shape); 1: one 2-D dot
):
    pid_g, groups, num_slices, num_tiles, offs_k, mask_k, offs_j, mask_j = slice_program(B, H, BLOCK_B, BLOCK_H,
                                                                                          BLOCK_HS)

    # W_g[slice, :]^T as (BLOCK_H, BLOCK_HS) per gate: gates of the owned units from all of h.
    # On tensor cores (16-bit, TF32) cut along K into KS chunks of KC (cell_step.recurrent_dot):
    # one per warp (KS = 8 = num_warps at the sizes that use 8 warps), each at least 16 deep (the
    # dot's minimum). The fp32 FMA dot ("ieee") is cut into FMA_KS chunks, which the launch picks
    # per cell and size (launch.kernel_shape: split where the 2-D form spills, 2-D where the
    # split does: 3 KB for the Elman forward at H=1024 in 8 chunks).
    SPLIT_K: tl.constexpr = DOT_PRECISION == "tf32" or FMA_KS > 1
    KS: tl.constexpr = (BLOCK_H // 16 if BLOCK_H // 16 < 8 else 8) if DOT_PRECISION == "tf32" else FMA_KS
    KC: tl.constexpr = BLOCK_H // KS
    w0, w1, w2, w3 = load_gate_tiles(w_ptr, G, H, offs_k, mask_k, offs_j, mask_j, True, WIDEN_WEIGHTS)
    if SPLIT_K:
        w0 = tl.reshape(w0, (KS, KC, BLOCK_HS))
        w1 = tl.reshape(w1, (KS, KC, BLOCK_HS))
        w2 = tl.reshape(w2, (KS, KC, BLOCK_HS))
        w3 = tl.reshape(w3, (KS, KC, BLOCK_HS))
    k3 = tl.arange(0, KS)[:, None, None] * KC + tl.arange(0, KC)[None, None, :]  # (KS, 1, KC): unit k of h
    b_hn = tl.full((BLOCK_HS,), 0.0, tl.float32)
    if CELL == GRU:
        b_hn = tl.load(bhn_ptr + offs_j, mask=mask_j, other=0.0).to(tl.float32)
    BH = B * H  # elements per exchange buffer

    ok = tl.full((), 1, tl.int32)  # 0 once a barrier stalled: the remaining steps are skipped
    target = tl.full((), 0, tl.int32)  # the barrier counter's value after this step (mod 2^32)
    for k in range(k_begin, k_end):
        if REVERSE:
            t = T - 1 - k
        else:
            t = k
        cur = (k % 2) * BH
        nxt = ((k + 1) % 2) * BH
        # A program may own several batch tiles (when P * tiles > SMs): their c lives in cbuf.
        for tile in range(pid_g, num_tiles * ok, groups):
            offs_b, mask_b, mask_full, mask, own_offs = slice_tile(tile, B, H, BLOCK_B, mask_k, offs_j, mask_j)
            lengths = tl.load(len_ptr + offs_b, mask=mask_b, other=0)
            active = (t < lengths)[:, None]
            row = t * B + offs_b
            gx_offs = row[:, None] * (G * H) + offs_j[None, :]
            sv_offs = row[:, None] * (S * H) + offs_j[None, :]
            h = tl.load(hbuf_ptr + cur + own_offs, mask=mask, other=0.0)  # own slice, fp32
            if SPLIT_K:  # (KS, BLOCK_B, KC)
                hd = tl.load(hdot_ptr + cur + offs_b[None, :, None] * H + k3, mask=mask_b[None, :, None] & (k3 < H),
                             other=0.0, cache_modifier=".cg").to(w0.dtype)
            else:  # (BLOCK_B, BLOCK_H)
                hd = tl.load(hdot_ptr + cur + offs_b[:, None] * H + offs_k[None, :], mask=mask_full, other=0.0,
                             cache_modifier=".cg").to(w0.dtype)
            c = h  # a placeholder; the LSTM reads its c from cbuf
            if CELL == LSTM:
                c = tl.load(cbuf_ptr + own_offs, mask=mask, other=0.0)
            h_new, c = forward_step(hd, h, c, gx_offs, sv_offs, mask, active, w0, w1, w2, w3, b_hn, gx_ptr, saved_ptr,
                                    H, CELL, DOT_PRECISION, SPLIT_K)
            if CELL == LSTM:
                tl.store(cbuf_ptr + own_offs, c, mask=mask)
            h_next = tl.where(active, h_new, h)
            tl.store(hbuf_ptr + nxt + own_offs, h_next, mask=mask)
            tl.store(hdot_ptr + nxt + own_offs, h_next.to(hdot_ptr.dtype.element_ty), mask=mask)
            out = tl.where(active, h_new, 0.0)
            tl.store(out_ptr + row[:, None] * H + offs_j[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)
        if BARRIER:
            target += num_slices
            if ok != 0:
                ok = grid_barrier(counter_ptr + pid_g, stall_ptr, target, max_spins)


@triton.jit(do_not_specialize=["T", "B", "k_begin", "k_end", "finish", "max_spins"])
def sliced_backward_kernel(
    dout_ptr,  # (T, B, H)
    w_ptr,  # (G*H, H)
    saved_ptr,  # (T, B, S*H) fp32
    out_ptr,  # (T, B, H) GRU: h_prev
    h0_ptr,  # (B, H) GRU only
    c0_ptr,  # (B, H) LSTM only
    len_ptr,  # (B,) int32
    dgx_ptr,  # (T, B, G*H) out; also the exchange of gate gradients between programs
    dghn_ptr,  # (T, B, H) out, GRU only
    dhbuf_ptr,  # (B, H) fp32 carried dh: dh_T at the start, dh0 at the end
    dcbuf_ptr,  # (B, H) fp32 carried dc (LSTM): dc_T at the start, dc0 at the end
    counter_ptr,  # (batch groups,) int32 zeros, persistent mode only
    stall_ptr,  # (1,) int32 zero; set to 1 by a program whose barrier wait timed out
    T,
    B,
    k_begin,  # steps k_begin .. k_end-1 of the backward order (step k is t = T-1-k forward)
    k_end,
    finish,  # 1: after the loop, finish the last step (phase A) so dhbuf holds dh0
    max_spins,  # polls before a barrier wait counts as a stall
    H: tl.constexpr,
    G: tl.constexpr,
    S: tl.constexpr,
    CELL: tl.constexpr,
    REVERSE: tl.constexpr,  # direction of the forward pass
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_HS: tl.constexpr,
    BARRIER: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    WIDEN_WEIGHTS: tl.constexpr,
):
    pid_g, groups, num_slices, num_tiles, offs_k, mask_k, offs_j, mask_j = slice_program(B, H, BLOCK_B, BLOCK_H,
                                                                                          BLOCK_HS)

    # W_g[:, slice] as (BLOCK_H, BLOCK_HS) per gate: dh of the owned units from all gate gradients.
    w0, w1, w2, w3 = load_gate_tiles(w_ptr, G, H, offs_k, mask_k, offs_j, mask_j, False, WIDEN_WEIGHTS)
    wdt = w0.dtype

    ok = tl.full((), 1, tl.int32)  # 0 once a barrier stalled: the remaining steps are skipped
    target = tl.full((), 0, tl.int32)  # the barrier counter's value after this step (mod 2^32)
    for k in range(k_begin, k_end + finish):
        for tile in range(pid_g, num_tiles * ok, groups):
            offs_b, mask_b, mask_full, mask, own_offs = slice_tile(tile, B, H, BLOCK_B, mask_k, offs_j, mask_j)
            # dh: the part of dh_t known before step t+1's gate gradients are reduced (phase A
            # adds them); for the GRU it includes the direct term dh * z. Kept in dhbuf.
            dh = tl.load(dhbuf_ptr + own_offs, mask=mask, other=0.0)

            # Phase A: finish step k-1 (its gate gradients from all programs are in dgx now).
            if k > 0:
                if REVERSE:
                    tp = k - 1
                else:
                    tp = T - k
                prow = tp * B + offs_b
                dg_offs = prow[:, None] * (G * H) + offs_k[None, :]
                dg0 = tl.load(dgx_ptr + dg_offs, mask=mask_full, other=0.0, cache_modifier=".cg")
                dh += tl.dot(dg0.to(wdt), w0, input_precision=DOT_PRECISION)
                if CELL == LSTM:
                    dg1 = tl.load(dgx_ptr + dg_offs + H, mask=mask_full, other=0.0, cache_modifier=".cg")
                    dg2 = tl.load(dgx_ptr + dg_offs + 2 * H, mask=mask_full, other=0.0, cache_modifier=".cg")
                    dg3 = tl.load(dgx_ptr + dg_offs + 3 * H, mask=mask_full, other=0.0, cache_modifier=".cg")
                    dh += tl.dot(dg1.to(wdt), w1, input_precision=DOT_PRECISION)
                    dh += tl.dot(dg2.to(wdt), w2, input_precision=DOT_PRECISION)
                    dh += tl.dot(dg3.to(wdt), w3, input_precision=DOT_PRECISION)
                if CELL == GRU:
                    dg1 = tl.load(dgx_ptr + dg_offs + H, mask=mask_full, other=0.0, cache_modifier=".cg")
                    dgn = tl.load(dghn_ptr + prow[:, None] * H + offs_k[None, :], mask=mask_full, other=0.0,
                                  cache_modifier=".cg")
                    dh += tl.dot(dg1.to(wdt), w1, input_precision=DOT_PRECISION)
                    dh += tl.dot(dgn.to(wdt), w2, input_precision=DOT_PRECISION)

            # Phase B: this program's slice of the gate gradients of step k.
            if k < k_end:
                lengths = tl.load(len_ptr + offs_b, mask=mask_b, other=0)
                active, row, prev_row, has_prev = backward_rows(k, T, B, offs_b, lengths, REVERSE)
                dc = dh  # a placeholder; the LSTM reads its dc from dcbuf
                if CELL == LSTM:
                    dc = tl.load(dcbuf_ptr + own_offs, mask=mask, other=0.0)
                # The gate gradients go to dgx (phase A of the next step reads them back).
                _, _, _, _, dh_direct, dc = backward_step(
                    dh, dc, row, prev_row, has_prev, active, own_offs, offs_j, mask, dout_ptr, saved_ptr, out_ptr,
                    h0_ptr, c0_ptr, dgx_ptr, dghn_ptr, H, G, S, CELL
                )
                if CELL == LSTM:
                    tl.store(dcbuf_ptr + own_offs, dc, mask=mask)
                if CELL == GRU:  # the direct term dh_tot * z; the rest comes in phase A
                    dh = tl.where(active, dh_direct, dh)
                else:
                    dh = tl.where(active, 0.0, dh)
                # Inactive rows stored zero gate gradients, so phase A adds nothing to their dh.
            tl.store(dhbuf_ptr + own_offs, dh, mask=mask)
        if BARRIER:
            if k < k_end:
                target += num_slices
                if ok != 0:
                    ok = grid_barrier(counter_ptr + pid_g, stall_ptr, target, max_spins)
