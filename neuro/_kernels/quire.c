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
    *sig = 0;
    *exp = 0;
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

/* ---------------------------------------------------------------------------------------------
 * The event step of neuro.engine.UpdateEngine for float storage and nearest rounding:
 *     w[idx] <- clamp(round_p(w[idx] + lr * S[idx]), lo, hi),   then S[idx] <- 0
 * for every idx in index, where S is the quire value of the (unnormalised) limbs of entry idx,
 * lr = lr_sig * 2**lr_exp (lr_sig >= 0), and round_p rounds the exact sum once to the nearest
 * float32 (p = 24) or float64 (p = 53), ties to even; an exact zero gives +0.  Everything is
 * integer arithmetic on base-2**32 digits, so the result is the correctly rounded one -- the bits
 * of the engine's exact path.  Entries whose result would be subnormal or overflow (or whose sum
 * spans more digits than the local buffers hold) are left alone and listed in `undecided`.
 * Returns how many were listed.
 */
#define MAXD 192

static inline uint64_t digit_at(const uint64_t *r, int64_t nd, int64_t i)
{
    return (i >= 0 && i < nd) ? r[i] : 0;
}

/* adds (digits of x) << shift into acc (nd digits, base 2**32, zeroed); returns 0 if it does not fit */
static int add_shifted(uint64_t *acc, int64_t nd, const uint64_t *x, int64_t nx, int64_t shift)
{
    int64_t q = shift >> 5;
    int s = (int)(shift & 31);
    uint64_t carry = 0;
    for (int64_t i = 0; i <= nx; ++i) {
        uint64_t cur = (i < nx ? x[i] : 0) << s;
        uint64_t prev = (s && i > 0) ? x[i - 1] >> (32 - s) : 0;
        uint64_t v = (cur & 0xFFFFFFFFu) | prev;
        int64_t at = q + i;
        if (at >= nd) {
            if (v || carry)
                return 0;
            continue;
        }
        uint64_t sum = acc[at] + v + carry;
        acc[at] = sum & 0xFFFFFFFFu;
        carry = sum >> 32;
    }
    for (int64_t at = q + nx + 1; carry && at < nd; ++at) {
        uint64_t sum = acc[at] + carry;
        acc[at] = sum & 0xFFFFFFFFu;
        carry = sum >> 32;
    }
    return carry == 0;
}

/* a -= b (both nd digits, a >= b) */
static void sub_digits(uint64_t *a, const uint64_t *b, int64_t nd)
{
    int64_t borrow = 0;
    for (int64_t i = 0; i < nd; ++i) {
        int64_t v = (int64_t)a[i] - (int64_t)b[i] - borrow;
        borrow = v < 0;
        a[i] = (uint64_t)(v + (borrow ? (INT64_C(1) << 32) : 0));
    }
}

static int cmp_digits(const uint64_t *a, const uint64_t *b, int64_t nd)
{
    for (int64_t i = nd - 1; i >= 0; --i)
        if (a[i] != b[i])
            return a[i] > b[i] ? 1 : -1;
    return 0;
}

static inline int bitlen128(unsigned __int128 x)
{
    uint64_t hi = (uint64_t)(x >> 64), lo = (uint64_t)x;
    return hi ? 128 - __builtin_clzll(hi) : (lo ? 64 - __builtin_clzll(lo) : 0);
}

/* The common case of round_entry in 128-bit integers: both terms, shifted to the common unit, hold
 * at most 126 bits.  Returns 0 when they do not (the caller takes the digit path); otherwise 1 with
 * *out the result, or NaN when it is subnormal or overflows (then the entry is left undecided). */
static int round_128(const uint64_t *m, int64_t nm, int64_t e_s, int64_t mw, int64_t e_w, int64_t unit,
                     int neg_s, int p, int emin, int emax, double *out)
{
    for (int64_t i = 4; i < nm; ++i)
        if (m[i])
            return 0;
    unsigned __int128 big = 0;
    for (int64_t i = (nm < 4 ? nm : 4) - 1; i >= 0; --i)
        big = (big << 32) | m[i];
    int64_t sh_s = e_s - unit, sh_w = e_w - unit;
    int neg_w = mw < 0;
    unsigned __int128 small = (unsigned __int128)(uint64_t)(neg_w ? -mw : mw);
    if (bitlen128(big) + sh_s > 126 || (mw != 0 && bitlen128(small) + sh_w > 126))
        return 0;
    big <<= sh_s;
    if (mw != 0)
        small <<= sh_w;
    int neg = neg_s;
    unsigned __int128 mag;
    if (mw == 0 || neg_w == neg_s) {
        mag = big + small;
    } else if (big >= small) {
        mag = big - small;
    } else {
        mag = small - big;
        neg = neg_w;
    }
    if (mag == 0) {
        *out = 0.0;
        return 1;
    }
    int64_t lead = bitlen128(mag) - 1;
    int64_t scale = unit + lead;
    int64_t cut = lead - (p - 1);
    uint64_t mant;
    if (cut <= 0) {
        mant = (uint64_t)(mag << (-cut));
    } else {
        mant = (uint64_t)(mag >> cut);
        unsigned __int128 below = mag & ((((unsigned __int128)1) << cut) - 1);
        unsigned __int128 half = ((unsigned __int128)1) << (cut - 1);
        if (below > half || (below == half && (mant & 1)))
            ++mant;
        if (mant >> p) {
            mant >>= 1;
            ++scale;
        }
    }
    if (scale < emin || scale > emax) {
        *out = __builtin_nan("");
        return 1;
    }
    uint64_t bits = ((uint64_t)neg << 63) | ((uint64_t)(scale + 1023) << 52) |
                    ((mant << (53 - p)) & ((UINT64_C(1) << 52) - 1));
    memcpy(out, &bits, 8);
    return 1;
}

static int round_entry(const int64_t *l, int64_t length, int64_t offset, int64_t lr_sig, int64_t lr_exp,
                       double w, int p, int emin, int emax, double *out)
{
    int64_t d[MAXD];
    uint64_t m[MAXD], a[MAXD], b[MAXD];
    if (length + 3 > MAXD / 2)
        return 0;
    d[0] = 0; /* read below when length is 0 */
    /* S's digits: carries, then the signed top split so that every digit is 32 bits */
    for (int64_t i = 0; i < length; ++i)
        d[i] = l[i];
    for (int64_t i = 0; i + 1 < length; ++i) {
        int64_t c = floor_shift(d[i], 32);
        d[i] &= (INT64_C(1) << 32) - 1;
        d[i + 1] += c;
    }
    int64_t n = length;
    if (n) {
        int64_t top = d[n - 1];
        d[n - 1] = top & ((INT64_C(1) << 32) - 1);
        d[n] = floor_shift(top, 32);
        ++n;
    }
    int neg_s = n && d[n - 1] < 0;
    /* |S| * lr_sig */
    int64_t carry = 0;
    int nonzero_s = 0;
    for (int64_t i = 0; i < n; ++i) {
        int64_t x = (neg_s ? -d[i] : d[i]) + carry;
        m[i] = (uint64_t)(x & ((INT64_C(1) << 32) - 1));
        carry = floor_shift(x, 32);
    }
    uint64_t c2 = 0;
    for (int64_t i = 0; i < n; ++i) {
        uint64_t x = m[i] * (uint64_t)lr_sig + c2;
        m[i] = x & 0xFFFFFFFFu;
        c2 = x >> 32;
        nonzero_s |= m[i] != 0;
    }
    m[n] = c2;
    nonzero_s |= c2 != 0;
    int64_t nm = n + 1;
    int64_t e_s = 32 * offset + lr_exp;
    /* w = sign * mw * 2**e_w */
    int64_t mw, e_w;
    if (!decompose(w, &mw, &e_w))
        return 0;
    int neg_w = mw < 0;
    uint64_t wmag[2] = {(uint64_t)(neg_w ? -mw : mw) & 0xFFFFFFFFu, (uint64_t)(neg_w ? -mw : mw) >> 32};
    if (!nonzero_s) { /* the sum is w itself: a storage value (never -0 here) */
        *out = mw == 0 ? 0.0 : w;
        return 1;
    }
    int64_t unit = e_s;
    if (mw != 0 && e_w < unit)
        unit = e_w;
    if (round_128(m, nm, e_s, mw, e_w, unit, neg_s, p, emin, emax, out))
        return *out == *out; /* NaN: the 128-bit path found an out-of-range result */
    /* digits that hold both terms shifted to the common unit, plus one for the carry of the sum */
    int64_t nd = nm + ((e_s - unit) >> 5) + 2;
    if (mw != 0 && 2 + ((e_w - unit) >> 5) + 2 > nd)
        nd = 2 + ((e_w - unit) >> 5) + 2;
    if (nd > MAXD)
        return 0;
    for (int64_t i = 0; i < nd; ++i)
        a[i] = b[i] = 0;
    if (!add_shifted(a, nd, m, nm, e_s - unit))
        return 0;
    int neg = neg_s;
    if (mw != 0) {
        if (!add_shifted(b, nd, wmag, 2, e_w - unit))
            return 0;
        if (neg_w == neg_s) {
            if (!add_shifted(a, nd, b, nd - 1, 0) || b[nd - 1])
                return 0;
        } else {
            int c = cmp_digits(a, b, nd);
            if (c == 0) {
                *out = 0.0;
                return 1;
            }
            if (c > 0) {
                sub_digits(a, b, nd);
            } else {
                sub_digits(b, a, nd);
                for (int64_t i = 0; i < nd; ++i)
                    a[i] = b[i];
                neg = neg_w;
            }
        }
    }
    /* round the magnitude a * 2**unit to p bits */
    int64_t t = nd - 1;
    while (t >= 0 && a[t] == 0)
        --t;
    if (t < 0) {
        *out = 0.0;
        return 1;
    }
    int bl = 64 - __builtin_clzll(a[t]);
    int64_t lead = 32 * t + bl - 1; /* bit index of the leading 1 */
    int64_t scale = unit + lead;
    if (scale < emin)
        return 0;
    uint64_t mant;
    int64_t cut = lead - (p - 1); /* lowest kept bit */
    if (cut <= 0) {
        mant = (digit_at(a, nd, 0) | (digit_at(a, nd, 1) << 32)) << (-cut);
    } else {
        int64_t q = cut >> 5;
        int s = (int)(cut & 31);
        uint64_t low = digit_at(a, nd, q) | (digit_at(a, nd, q + 1) << 32);
        uint64_t high = digit_at(a, nd, q + 2);
        mant = (low >> s) | (s ? high << (64 - s) : 0);
        mant &= (UINT64_C(1) << p) - 1;
        int64_t rb = cut - 1; /* the round bit */
        int round = (int)((digit_at(a, nd, rb >> 5) >> (rb & 31)) & 1);
        int sticky = (digit_at(a, nd, rb >> 5) & ((UINT64_C(1) << (rb & 31)) - 1)) != 0;
        for (int64_t i = 0; i < (rb >> 5) && !sticky; ++i)
            sticky = a[i] != 0;
        if (round && (sticky || (mant & 1)))
            ++mant;
        if (mant >> p) {
            mant >>= 1;
            ++scale;
        }
    }
    if (scale > emax)
        return 0;
    uint64_t bits = ((uint64_t)neg << 63) | ((uint64_t)(scale + 1023) << 52) |
                    ((mant << (53 - p)) & ((UINT64_C(1) << 52) - 1));
    memcpy(out, &bits, 8);
    return 1;
}

int64_t quire_step_entries(const int64_t *index, int64_t count, int64_t *limbs, int64_t length,
                           int64_t offset, int64_t lr_sig, int64_t lr_exp, void *w, int64_t is_double,
                           double lo, double hi, int64_t *undecided)
{
    int64_t listed = 0;
    int p = is_double ? 53 : 24, emin = is_double ? -1022 : -126, emax = is_double ? 1023 : 127;
    for (int64_t k = 0; k < count; ++k) {
        int64_t idx = index[k];
        int64_t *l = limbs + idx * length;
        double wv = is_double ? ((double *)w)[idx] : (double)((float *)w)[idx];
        double r;
        if (!round_entry(l, length, offset, lr_sig, lr_exp, wv, p, emin, emax, &r)) {
            undecided[listed++] = idx;
            continue;
        }
        if (r < lo)
            r = lo;
        if (r > hi)
            r = hi;
        if (is_double)
            ((double *)w)[idx] = r;
        else
            ((float *)w)[idx] = (float)r;
        for (int64_t i = 0; i < length; ++i)
            l[i] = 0;
    }
    return listed;
}
