"""PackedSequence input: the output is a PackedSequence equal to torch.nn's (data, batch_sizes,
sorted_indices, unsorted_indices), the final states are equal (in the caller's batch order), and
gradients of the packed data, the initial states and every parameter match."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pack_sequence, pad_packed_sequence

from helpers import MODULES, make_pair, random_hx, run_and_compare

UNSORTED = [5, 1, 7, 3, 7, 2]  # includes a length-1 sequence and a tie
SORTED = [7, 7, 5, 3, 2, 1]


def _packed(lengths, enforce_sorted, batch_first=False, feature=5):
    batch, seq_len = len(lengths), max(lengths)
    shape = (batch, seq_len, feature) if batch_first else (seq_len, batch, feature)
    x = torch.randn(shape, dtype=torch.float64)
    return pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=enforce_sorted)


@pytest.mark.parametrize("with_hx", [False, True], ids=["hx_none", "hx_given"])
@pytest.mark.parametrize("enforce_sorted", [False, True], ids=["unsorted", "sorted"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("kind", list(MODULES))
def test_packed_matches_torch(kind, num_layers, bidirectional, enforce_sorted, with_hx):
    torch.manual_seed(10)
    ref, fast = make_pair(kind, 5, 24, num_layers=num_layers, bidirectional=bidirectional)
    lengths = UNSORTED if not enforce_sorted else SORTED
    packed = _packed(lengths, enforce_sorted)
    if not enforce_sorted:
        assert packed.sorted_indices is not None
    hx = random_hx(ref, len(lengths)) if with_hx else None
    (out_ref, _), (out_fast, _) = run_and_compare(ref, fast, packed, hx)
    # The packed output unpacks to zeros past every sequence's end, as torch.nn's does.
    padded, out_lengths = pad_packed_sequence(out_fast)
    assert out_lengths.tolist() == lengths
    for b, n in enumerate(lengths):
        assert torch.count_nonzero(padded[n:, b]) == 0
        assert torch.count_nonzero(padded[:n, b]) > 0


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "LSTM_PROJ"])
def test_packed_batch_first_module(kind):
    """batch_first does not apply to PackedSequence input: the result is the same packed layout."""
    torch.manual_seed(11)
    ref, fast = make_pair(kind, 5, 24, num_layers=2, bidirectional=True, batch_first=True)
    packed = _packed(UNSORTED, False, batch_first=True)
    run_and_compare(ref, fast, packed, random_hx(ref, len(UNSORTED)))


@pytest.mark.parametrize("kind", ["RNN_TANH", "LSTM", "GRU"])
def test_pack_sequence_all_length_one(kind):
    torch.manual_seed(12)
    ref, fast = make_pair(kind, 5, 24, bidirectional=True)
    seqs = [torch.randn(1, 5, dtype=torch.float64) for _ in range(4)]
    run_and_compare(ref, fast, pack_sequence(seqs, enforce_sorted=False))


@pytest.mark.parametrize("kind", ["RNN_RELU", "LSTM_PROJ", "GRU"])
def test_pack_sequence_single_sequence(kind):
    torch.manual_seed(13)
    ref, fast = make_pair(kind, 5, 24, num_layers=2)
    run_and_compare(ref, fast, pack_sequence([torch.randn(6, 5, dtype=torch.float64)]), random_hx(ref, 1))


def test_packed_equals_separate_runs():
    """Each sequence of a packed batch gives what it gives alone, unpadded (fastrnn only)."""
    torch.manual_seed(14)
    _, fast = make_pair("LSTM", 5, 24, num_layers=2, bidirectional=True)
    seqs = [torch.randn(n, 5, dtype=torch.float64) for n in UNSORTED]
    out, (h, c) = fast(pack_sequence(seqs, enforce_sorted=False))
    padded, _ = pad_packed_sequence(out)
    for b, seq in enumerate(seqs):
        out_b, (h_b, c_b) = fast(seq.unsqueeze(1))
        torch.testing.assert_close(padded[: len(seq), b], out_b[:, 0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(h[:, b], h_b[:, 0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(c[:, b], c_b[:, 0], rtol=1e-10, atol=1e-12)
