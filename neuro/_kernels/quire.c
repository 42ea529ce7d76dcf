/* Integer kernels of neuro.numerics.Quire: exact event terms (add_outer_events) and the carry pass.
 *
 * An event e adds one[e] * many[e, j] (j < width) to the accumulator at flat place
 *     idx[e] * s_idx + j * s_j
 * (a row of the result: s_idx = N, s_j = 1; a column: s_idx = 1, s_j = N).  The factors are
 * float64 values already rounded to the quire's format: finite, at most 30 significant bits, so
 * each product is an exact int64 significand (< 2**60) times a power of two.  An accumulator is
 * sum_i limbs[place, i] 2**(32 (offset + i)); a term adds three 32-bit parts to three limbs
 * (the caller counts the additions towards its carry budget).  Integer work only: exact.
 *
 * quire_event_range: lowest and highest limb a non-zero term starts at (out[0], out[1], kept if
 *                    already lower/higher); returns -1 if a factor is inf/NaN, else the number of
 *                    non-zero terms.
 * quire_event_fold:  adds the terms; limbs (entries, length) C-contiguous int64 whose window
 *                    [offset, offset + length) covers [lowest, highest + 3).
 * quire_normalize:   the carry pass of Quire.normalize over (entries, length) limbs: every limb but
 *                    the top into [0, 2**32), its carry added to the next; returns how many top
 *                    limbs lie outside [-2**31, 2**31) (the caller then widens the window).
 */
#include <stdint.h>
#include <string.h>

/* value = sig * 2**exp exactly (sig odd, or 0); returns 0 for inf/NaN. */
static int decompose(double x, int64_t *sig, int64_t *exp)
{
    uint64_t bits;
    memcpy(&bits, &x, 8);
    int64_t e = (int64_t)((bits >> 52) & 0x7FF);
    uint64_t man = bits & ((UINT64_C(1) << 52) - 1);
    if (e == 0x7FF)
        return 0;
    if (e == 0) {
        if (man == 0) {
            *sig = 0;
            *exp = 0;
            return 1;
        }
        e = 1; /* subnormal */
    } else {
        man |= UINT64_C(1) << 52;
    }
    int tz = __builtin_ctzll(man);
    man >>= tz;
    *sig = (bits >> 63) ? -(int64_t)man : (int64_t)man;
    *exp = e - 1075 + tz;
    return 1;
}

/* floor(v / 2**k) for 0 <= k < 63, whatever the compiler does with negative >> */
static inline int64_t floor_shift(int64_t v, int k)
{
    return v >= 0 ? v >> k : ~((~v) >> k);
}

static inline int64_t floor_div32(int64_t e)
{
    return e >= 0 ? e / 32 : -((-e + 31) / 32);
}

int64_t quire_event_range(int64_t events, const double *one, const double *many, int64_t width,
                          int64_t *out)
{
    int64_t count = 0;
    for (int64_t e = 0; e < events; ++e) {
        int64_t sa, ea;
        if (!decompose(one[e], &sa, &ea))
            return -1;
        const double *row = many + e * width;
        for (int64_t j = 0; j < width; ++j) {
            int64_t sb, eb;
            if (!decompose(row[j], &sb, &eb))
                return -1;
            if (sa == 0 || sb == 0)
                continue;
            int64_t base = floor_div32(ea + eb);
            if (count == 0 && out[0] > out[1]) {
                out[0] = out[1] = base;
            }
            if (base < out[0])
                out[0] = base;
            if (base > out[1])
                out[1] = base;
            ++count;
        }
    }
    return count;
}

void quire_event_fold(int64_t events, const double *one, const int64_t *idx, const double *many,
                      int64_t width, int64_t s_idx, int64_t s_j, int64_t *limbs, int64_t length,
                      int64_t offset)
{
    const int64_t mask = (INT64_C(1) << 32) - 1;
    for (int64_t e = 0; e < events; ++e) {
        int64_t sa, ea;
        decompose(one[e], &sa, &ea);
        if (sa == 0)
            continue;
        const double *row = many + e * width;
        int64_t first = idx[e] * s_idx;
        for (int64_t j = 0; j < width; ++j) {
            int64_t sb, eb;
            decompose(row[j], &sb, &eb);
            if (sb == 0)
                continue;
            int64_t v = sa * sb; /* |v| < 2**60 */
            int64_t exp = ea + eb;
            int64_t base = floor_div32(exp);
            int shift = (int)(exp - 32 * base);
            int keep = 32 - shift;
            int64_t low = (v & ((INT64_C(1) << keep) - 1)) << shift;
            int64_t rest = floor_shift(v, keep);
            int64_t *at = limbs + (first + j * s_j) * length + (base - offset);
            at[0] += low;
            at[1] += rest & mask;
            at[2] += floor_shift(rest, 32);
        }
    }
}

int64_t quire_normalize(int64_t *limbs, int64_t entries, int64_t length)
{
    const int64_t mask = (INT64_C(1) << 32) - 1;
    const int64_t half = INT64_C(1) << 31;
    int64_t outside = 0;
    if (length == 0)
        return 0;
    for (int64_t e = 0; e < entries; ++e) {
        int64_t *l = limbs + e * length;
        for (int64_t i = 0; i + 1 < length; ++i) {
            int64_t carry = floor_shift(l[i], 32);
            l[i] &= mask;
            l[i + 1] += carry;
        }
        int64_t top = l[length - 1];
        outside += (top >= half) | (top < -half);
    }
    return outside;
}
