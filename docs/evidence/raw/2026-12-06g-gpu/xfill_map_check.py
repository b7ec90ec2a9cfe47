"""Check of xfill.patch's x-stage layout without a GPU (session 23): every slot a warp reads in
qx_group (m-tile m, slot f = 2 j + h, lane ^ j) holds the x elements the old layout held there
(row 16 m + 8 h + lane / 4, columns qr_xoff(lane % 4, j)), each 8-lane read phase is one
contiguous 128 bytes, and each copy instruction of the new fill spreads its 32 16-byte writes 4 to
each of the 8 bank groups. Q4_K / Q8_0 share qr_xoff; Q6_K has its own."""
from collections import Counter


def xoff(dt, t4, j):
    if dt == 'q6':
        return 32 * (4 * (t4 >> 1) + (t4 & 1) + (0 if j < 4 else 2)) + 8 * (j & 3)
    return 64 * t4 + 8 * j


def slot(dt, c):  # qx_chunk_slot
    if dt == 'q6':
        sb = c >> 2
        rem = sb & 3
        return 2 * (sb >> 2) + (rem & 1), 4 * (rem >> 1) + (c & 3)
    return c >> 3, c & 7


for dt in ['q4', 'q6']:
    for MT in [1, 2, 4]:
        for HALF in ([False, True] if MT == 1 else [False]):
            xs = {}
            for r in range(2 * MT):
                warp_units = {}
                for tid in range(256):
                    q = tid + r * 256
                    m, tr, c = q >> 9, (q >> 5) & 15, q & 31
                    if HALF and tr >= 8:
                        continue
                    t4, j = slot(dt, c)
                    f, l = 2 * j + (tr >> 3), 4 * (tr & 7) + t4
                    key = (m, f, l ^ j)
                    assert key not in xs
                    xs[key] = (16 * m + tr, 8 * c)
                    warp_units.setdefault(tid >> 5, []).append(((m * 16 + f) * 32 + (l ^ j)) % 8)
                for units in warp_units.values():
                    assert max(Counter(units).values()) == 4
            for m in range(MT):
                for j in range(8):
                    for h in range(1 if HALF else 2):
                        f = 2 * j + h
                        for lane in range(32):
                            assert xs[(m, f, lane ^ j)] == (16 * m + 8 * h + (lane >> 2), xoff(dt, lane & 3, j))
                        for ph in range(4):
                            u = sorted((m * 16 + f) * 32 + (lane ^ j) for lane in range(8 * ph, 8 * ph + 8))
                            assert u == list(range(u[0], u[0] + 8))
            print(dt, 'MT', MT, 'HALF', HALF, 'ok')
