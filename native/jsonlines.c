/*
 * sluice.sources._jsonlines: JSON lines to typed column buffers in one pass (yyjson), plus
 * the two per-line loops of splitting a chunk into lines (newline positions, origin texts).
 *
 * The decode's fast path. Each line is parsed once, strictly (RFC 8259, valid UTF-8, no
 * duplicate keys among the schema's fields), and the schema's fields are written into
 * caller-allocated buffers. A line is flagged *unsure* whenever its value could differ from
 * what the DuckDB decode gives, or would be rejected: malformed JSON, not an object, a value
 * whose JSON type is not the field's, a double that is not finite or is a negative zero, an
 * integer out of a long's range, a timestamp or date text outside the plain ISO 8601 shapes. The caller decodes the unsure lines with DuckDB, which gives the reasons.
 *
 * decode(offsets, data, validity, start, n, wide, names, kinds, values, valid, str_offsets,
 *        unsure) -> list of bytes used per column (string columns; 0 for the others)
 *
 *   offsets, data, validity: the Arrow string array's buffers (validity may be None);
 *   start: the array's offset; n: its length; wide: 64-bit offsets (large_string);
 *   names: tuple of bytes; kinds: bytes, one code per field (0 string, 1 double, 2 long,
 *   3 boolean, 4 timestamp [us since the epoch, UTC], 5 date [days since the epoch]);
 *   values: per field a writable buffer of n values (8 bytes; 4 for dates; 1 for booleans),
 *   or for strings the data buffer (at least as large as the lines' bytes);
 *   valid: per field a writable buffer of n bytes (1: a value, 0: null);
 *   str_offsets: per field None, or for strings a writable buffer of n + 1 offsets (the
 *   width of the input's); unsure: a writable buffer of n bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "yyjson/yyjson.h"

enum { K_STRING = 0, K_DOUBLE, K_LONG, K_BOOLEAN, K_TIMESTAMP, K_DATE, K_COUNT };

typedef struct {
    const char *name;
    size_t name_len;
    int kind;
    char *values;
    uint8_t *valid;
    char *offsets;
    size_t capacity;
    size_t used;
    size_t row_start;
    Py_buffer views[3];
    int held;
} column_t;

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;
    const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int64_t y, int64_t m) {
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return 29;
    return days[m - 1];
}

/* The value of `count` ASCII digits at `s`, or -1 when one is not a digit. */
static int64_t digits(const char *s, int count) {
    int64_t value = 0;
    for (int i = 0; i < count; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        value = value * 10 + (s[i] - '0');
    }
    return value;
}

/* "YYYY-MM-DD" (year 1-9999, a real day) to days since the epoch; 0 when not that shape. */
static int parse_date_part(const char *s, int64_t *days) {
    int64_t y = digits(s, 4), m = digits(s + 5, 2), d = digits(s + 8, 2);
    if (s[4] != '-' || s[7] != '-' || y < 1 || m < 1 || m > 12 || d < 1) return 0;
    if (d > days_in_month(y, m)) return 0;
    *days = days_from_civil(y, m, d);
    return 1;
}

static int parse_date(const char *s, size_t len, int64_t *days) {
    return len == 10 && parse_date_part(s, days);
}

/* "YYYY-MM-DD[T ]HH:MM:SS[.f{1,6}][Z|+HH|+HHMM|+HH:MM]" to microseconds since the epoch (a
 * text without an offset is UTC, the decode's session time zone); 0 for any other text. */
static int parse_timestamp(const char *s, size_t len, int64_t *micros) {
    int64_t days;
    if (len < 19 || !parse_date_part(s, &days) || (s[10] != 'T' && s[10] != ' ')) return 0;
    int64_t h = digits(s + 11, 2), mi = digits(s + 14, 2), sec = digits(s + 17, 2);
    if (s[13] != ':' || s[16] != ':' || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 ||
        sec > 59)
        return 0;
    size_t at = 19;
    int64_t fraction = 0;
    if (at < len && s[at] == '.') {
        size_t first = ++at;
        while (at < len && s[at] >= '0' && s[at] <= '9') at++;
        size_t count = at - first;
        if (count < 1 || count > 6) return 0;
        fraction = digits(s + first, (int)count);
        for (size_t i = count; i < 6; i++) fraction *= 10;
    }
    int64_t offset = 0;
    if (at < len) {
        if (s[at] == 'Z') {
            at++;
        } else if (s[at] == '+' || s[at] == '-') {
            int64_t sign = s[at] == '-' ? -1 : 1, oh, om = 0;
            if (len - at < 3 || (oh = digits(s + at + 1, 2)) < 0 || oh > 23) return 0;
            at += 3;
            if (at < len) {
                if (s[at] == ':') at++;
                if (len - at != 2 || (om = digits(s + at, 2)) < 0 || om > 59) return 0;
                at += 2;
            }
            offset = sign * (oh * 3600 + om * 60);
        } else {
            return 0;
        }
    }
    if (at != len) return 0;
    *micros = ((days * 86400 + h * 3600 + mi * 60 + sec - offset) * 1000000) + fraction;
    return 1;
}

static void put_offset(column_t *c, Py_ssize_t row, size_t value, int wide) {
    if (wide)
        ((int64_t *)c->offsets)[row] = (int64_t)value;
    else
        ((int32_t *)c->offsets)[row] = (int32_t)value;
}

static void put_null(column_t *c, Py_ssize_t row) {
    c->valid[row] = 0;
    switch (c->kind) {
    case K_STRING: break;
    case K_BOOLEAN: ((uint8_t *)c->values)[row] = 0; break;
    case K_DATE: ((int32_t *)c->values)[row] = 0; break;
    default: ((int64_t *)c->values)[row] = 0; break;
    }
}

/* Write `val` as row `row` of `c`; 0 when the row is unsure. */
static int put_value(column_t *c, Py_ssize_t row, yyjson_val *val) {
    if (yyjson_is_null(val)) {
        put_null(c, row);
        return 1;
    }
    c->valid[row] = 1;
    switch (c->kind) {
    case K_STRING: {
        if (!yyjson_is_str(val)) return 0;
        const char *text = yyjson_get_str(val);
        size_t len = yyjson_get_len(val);
        if (c->used + len > c->capacity) return 0;
        memcpy(c->values + c->used, text, len);
        c->used += len;
        return 1;
    }
    case K_DOUBLE: {
        double d;
        if (yyjson_is_real(val)) {
            d = yyjson_get_real(val);
            if (!isfinite(d) || (d == 0.0 && signbit(d))) return 0;
        } else if (yyjson_is_sint(val)) { /* rounded to nearest, as DuckDB casts the text */
            d = (double)yyjson_get_sint(val);
        } else if (yyjson_is_uint(val)) {
            d = (double)yyjson_get_uint(val);
        } else {
            return 0;
        }
        ((double *)c->values)[row] = d;
        return 1;
    }
    case K_LONG: {
        int64_t v;
        if (yyjson_is_sint(val)) {
            v = yyjson_get_sint(val);
        } else if (yyjson_is_uint(val)) {
            uint64_t u = yyjson_get_uint(val);
            if (u > (uint64_t)INT64_MAX) return 0;
            v = (int64_t)u;
        } else {
            return 0;
        }
        ((int64_t *)c->values)[row] = v;
        return 1;
    }
    case K_BOOLEAN:
        if (!yyjson_is_bool(val)) return 0;
        ((uint8_t *)c->values)[row] = yyjson_get_bool(val) ? 1 : 0;
        return 1;
    case K_TIMESTAMP: {
        int64_t micros;
        if (!yyjson_is_str(val) || !parse_timestamp(yyjson_get_str(val), yyjson_get_len(val),
                                                    &micros))
            return 0;
        ((int64_t *)c->values)[row] = micros;
        return 1;
    }
    case K_DATE: {
        int64_t days;
        if (!yyjson_is_str(val) || !parse_date(yyjson_get_str(val), yyjson_get_len(val), &days))
            return 0;
        ((int32_t *)c->values)[row] = (int32_t)days;
        return 1;
    }
    }
    return 0;
}

static int same_name(const column_t *c, const char *name, size_t len) {
    if (c->name_len != len) return 0;
    for (size_t i = 0; i < len; i++) /* names are short: a loop beats calling memcmp */
        if (c->name[i] != name[i]) return 0;
    return 1;
}

typedef struct {
    const char *data;
    const char *offsets;
    const uint8_t *validity;
    Py_ssize_t start, n;
    int wide;
    column_t *columns;
    Py_ssize_t ncols;
    uint8_t *unsure;
} job_t;

/* Decode every line of `job`; -1 when memory runs out. */
static int run(job_t *job) {
    size_t pool_size = 0;
    void *pool = NULL;
    uint8_t *seen = calloc((size_t)job->ncols + 1, 1);
    if (seen == NULL) return -1;
    for (Py_ssize_t i = 0; i < job->n; i++) {
        Py_ssize_t at = job->start + i;
        for (Py_ssize_t j = 0; j < job->ncols; j++) {
            column_t *c = &job->columns[j];
            c->row_start = c->used;
            if (c->kind == K_STRING) put_offset(c, i, c->used, job->wide);
            seen[j] = 0;
        }
        int ok = 1;
        if (job->validity != NULL && !((job->validity[at >> 3] >> (at & 7)) & 1)) {
            ok = 0;
        } else {
            int64_t begin, end;
            if (job->wide) {
                begin = ((const int64_t *)job->offsets)[at];
                end = ((const int64_t *)job->offsets)[at + 1];
            } else {
                begin = ((const int32_t *)job->offsets)[at];
                end = ((const int32_t *)job->offsets)[at + 1];
            }
            size_t len = (size_t)(end - begin);
            size_t need = yyjson_read_max_memory_usage(len, 0);
            if (need == 0) {
                free(pool);
                free(seen);
                return -1;
            }
            if (need > pool_size) {
                free(pool);
                pool_size = need * 2;
                pool = malloc(pool_size);
                if (pool == NULL) {
                    free(seen);
                    return -1;
                }
            }
            yyjson_alc alc;
            yyjson_alc_pool_init(&alc, pool, pool_size);
            yyjson_doc *doc = yyjson_read_opts((char *)job->data + begin, len, 0, &alc, NULL);
            yyjson_val *root = doc ? yyjson_doc_get_root(doc) : NULL;
            if (root == NULL || !yyjson_is_obj(root)) {
                ok = 0;
            } else {
                size_t idx, max;
                yyjson_val *key, *val;
                Py_ssize_t expected = 0; /* lines usually list the fields in one order */
                yyjson_obj_foreach(root, idx, max, key, val) {
                    const char *name = yyjson_get_str(key);
                    size_t name_len = yyjson_get_len(key);
                    Py_ssize_t j = expected < job->ncols ? expected : 0;
                    if (!same_name(&job->columns[j], name, name_len)) {
                        j = 0;
                        while (j < job->ncols && !same_name(&job->columns[j], name, name_len))
                            j++;
                        if (j == job->ncols) continue;
                    }
                    expected = j + 1;
                    if (seen[j] || !put_value(&job->columns[j], i, val)) {
                        ok = 0;
                        break;
                    }
                    seen[j] = 1;
                }
            }
        }
        job->unsure[i] = ok ? 0 : 1;
        for (Py_ssize_t j = 0; j < job->ncols; j++) {
            column_t *c = &job->columns[j];
            if (!ok) c->used = c->row_start;
            if (!ok || !seen[j]) put_null(c, i);
        }
    }
    for (Py_ssize_t j = 0; j < job->ncols; j++) {
        column_t *c = &job->columns[j];
        if (c->kind == K_STRING) put_offset(c, job->n, c->used, job->wide);
    }
    free(pool);
    free(seen);
    return 0;
}

static Py_ssize_t value_width(int kind) {
    switch (kind) {
    case K_STRING: return 0;
    case K_BOOLEAN: return 1;
    case K_DATE: return 4;
    default: return 8;
    }
}

static int get_writable(PyObject *obj, Py_buffer *view, Py_ssize_t at_least, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (view->len < at_least) {
        PyErr_Format(PyExc_ValueError, "%s buffer too small: %zd bytes, %zd needed", what,
                     view->len, at_least);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static void release_columns(column_t *columns, Py_ssize_t count) {
    for (Py_ssize_t j = 0; j < count; j++)
        for (int k = 0; k < columns[j].held; k++) PyBuffer_Release(&columns[j].views[k]);
}

static PyObject *decode(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *offsets_obj, *data_obj, *validity_obj, *names, *values, *valid, *str_offsets;
    PyObject *unsure_obj;
    Py_ssize_t start, n;
    int wide;
    Py_buffer kinds;
    if (!PyArg_ParseTuple(args, "OOOnnpO!y*O!O!O!O", &offsets_obj, &data_obj, &validity_obj,
                          &start, &n, &wide, &PyTuple_Type, &names, &kinds, &PyList_Type,
                          &values, &PyList_Type, &valid, &PyList_Type, &str_offsets,
                          &unsure_obj))
        return NULL;
    Py_ssize_t ncols = PyTuple_GET_SIZE(names);
    PyObject *result = NULL;
    Py_buffer offsets = {0}, data = {0}, validity = {0}, unsure = {0};
    int have_offsets = 0, have_data = 0, have_validity = 0, have_unsure = 0;
    column_t *columns = calloc((size_t)ncols + 1, sizeof(column_t));
    if (columns == NULL) {
        PyBuffer_Release(&kinds);
        return PyErr_NoMemory();
    }
    if (kinds.len != ncols || PyList_GET_SIZE(values) != ncols ||
        PyList_GET_SIZE(valid) != ncols || PyList_GET_SIZE(str_offsets) != ncols) {
        PyErr_SetString(PyExc_ValueError, "names, kinds and buffers differ in length");
        goto done;
    }
    if (start < 0 || n < 0) {
        PyErr_SetString(PyExc_ValueError, "negative start or length");
        goto done;
    }
    Py_ssize_t width = wide ? 8 : 4;
    if (PyObject_GetBuffer(offsets_obj, &offsets, PyBUF_C_CONTIGUOUS) < 0) goto done;
    have_offsets = 1;
    if (offsets.len < (start + n + 1) * width) {
        PyErr_SetString(PyExc_ValueError, "offsets buffer too small");
        goto done;
    }
    if (PyObject_GetBuffer(data_obj, &data, PyBUF_C_CONTIGUOUS) < 0) goto done;
    have_data = 1;
    const char *offs = offsets.buf;
    int64_t first = wide ? ((int64_t *)offs)[start] : ((int32_t *)offs)[start];
    int64_t last = wide ? ((int64_t *)offs)[start + n] : ((int32_t *)offs)[start + n];
    if (first < 0 || last < first || last > data.len) {
        PyErr_SetString(PyExc_ValueError, "offsets out of the data buffer");
        goto done;
    }
    for (Py_ssize_t at = start; n > 0 && at < start + n; at++) {
        int64_t a = wide ? ((int64_t *)offs)[at] : ((int32_t *)offs)[at];
        int64_t b = wide ? ((int64_t *)offs)[at + 1] : ((int32_t *)offs)[at + 1];
        if (b < a || a < first || b > last) {
            PyErr_SetString(PyExc_ValueError, "offsets are not monotonic");
            goto done;
        }
    }
    if (validity_obj != Py_None) {
        if (PyObject_GetBuffer(validity_obj, &validity, PyBUF_C_CONTIGUOUS) < 0) goto done;
        have_validity = 1;
        if (validity.len * 8 < start + n) {
            PyErr_SetString(PyExc_ValueError, "validity buffer too small");
            goto done;
        }
    }
    if (get_writable(unsure_obj, &unsure, n, "unsure") < 0) goto done;
    have_unsure = 1;
    for (Py_ssize_t j = 0; j < ncols; j++) {
        column_t *c = &columns[j];
        PyObject *name = PyTuple_GET_ITEM(names, j);
        if (!PyBytes_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "field names must be bytes");
            goto done;
        }
        c->name = PyBytes_AS_STRING(name);
        c->name_len = (size_t)PyBytes_GET_SIZE(name);
        c->kind = ((const uint8_t *)kinds.buf)[j];
        if (c->kind >= K_COUNT) {
            PyErr_Format(PyExc_ValueError, "unknown kind %d", c->kind);
            goto done;
        }
        Py_ssize_t need = c->kind == K_STRING ? 0 : n * value_width(c->kind);
        if (get_writable(PyList_GET_ITEM(values, j), &c->views[0], need, "values") < 0) goto done;
        c->held = 1;
        c->values = c->views[0].buf;
        c->capacity = (size_t)c->views[0].len;
        if (get_writable(PyList_GET_ITEM(valid, j), &c->views[1], n, "valid") < 0) goto done;
        c->held = 2;
        c->valid = c->views[1].buf;
        if (c->kind == K_STRING) {
            PyObject *o = PyList_GET_ITEM(str_offsets, j);
            if (get_writable(o, &c->views[2], (n + 1) * width, "string offsets") < 0) goto done;
            c->held = 3;
            c->offsets = c->views[2].buf;
        }
    }
    job_t job = {data.buf, offsets.buf, have_validity ? validity.buf : NULL, start, n, wide,
                 columns, ncols, unsure.buf};
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = run(&job);
    Py_END_ALLOW_THREADS
    if (status < 0) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyList_New(ncols);
    if (result == NULL) goto done;
    for (Py_ssize_t j = 0; j < ncols; j++) {
        PyObject *used = PyLong_FromSize_t(columns[j].used);
        if (used == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, j, used);
    }
done:
    release_columns(columns, ncols);
    free(columns);
    if (have_offsets) PyBuffer_Release(&offsets);
    if (have_data) PyBuffer_Release(&data);
    if (have_validity) PyBuffer_Release(&validity);
    if (have_unsure) PyBuffer_Release(&unsure);
    PyBuffer_Release(&kinds);
    return result;
}

/* newlines(data) -> bytearray of the int64 positions of every newline byte in `data`. */
static PyObject *newlines(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    const char *data = view.buf, *end = data + view.len;
    size_t count = 0, capacity = (size_t)view.len / 64 + 16;
    int64_t *positions = malloc(capacity * sizeof(int64_t));
    int failed = positions == NULL;
    Py_BEGIN_ALLOW_THREADS
    for (const char *at = data;
         !failed && at < end && (at = memchr(at, '\n', (size_t)(end - at))) != NULL; at++) {
        if (count == capacity) {
            int64_t *grown = realloc(positions, 2 * capacity * sizeof(int64_t));
            if (grown == NULL) {
                failed = 1;
                break;
            }
            positions = grown;
            capacity *= 2;
        }
        positions[count++] = at - data;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    PyObject *out = NULL;
    if (failed)
        PyErr_NoMemory();
    else
        out = PyByteArray_FromStringAndSize((const char *)positions,
                                            (Py_ssize_t)(count * sizeof(int64_t)));
    free(positions);
    return out;
}

/* Decimal digits of `value` written backwards from `stop`; returns the first byte. */
static char *write_decimal(char *stop, int64_t value) {
    uint64_t magnitude = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;
    do {
        *--stop = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    if (value < 0) *--stop = '-';
    return stop;
}

static size_t decimal_length(int64_t value) {
    char scratch[24];
    return (size_t)(scratch + sizeof scratch - write_decimal(scratch + sizeof scratch, value));
}

/* prefixed_numbers(prefix, numbers) -> (int32 offsets, data) of the strings prefix + number
 * (numbers: a buffer of int64), as bytearrays for an Arrow string array. */
static PyObject *prefixed_numbers(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer prefix, numbers;
    if (!PyArg_ParseTuple(args, "y*y*", &prefix, &numbers)) return NULL;
    PyObject *result = NULL, *offsets = NULL, *data = NULL;
    Py_ssize_t n = numbers.len / (Py_ssize_t)sizeof(int64_t);
    const int64_t *values = numbers.buf;
    size_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) total += (size_t)prefix.len + decimal_length(values[i]);
    if (total > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "strings too large for 32-bit offsets");
        goto done;
    }
    offsets = PyByteArray_FromStringAndSize(NULL, (n + 1) * (Py_ssize_t)sizeof(int32_t));
    data = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (offsets == NULL || data == NULL) goto done;
    int32_t *offs = (int32_t *)PyByteArray_AS_STRING(offsets);
    char *out = PyByteArray_AS_STRING(data);
    Py_BEGIN_ALLOW_THREADS
    size_t at = 0;
    char scratch[24];
    offs[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        memcpy(out + at, prefix.buf, (size_t)prefix.len);
        at += (size_t)prefix.len;
        char *first = write_decimal(scratch + sizeof scratch, values[i]);
        size_t len = (size_t)(scratch + sizeof scratch - first);
        memcpy(out + at, first, len);
        at += len;
        offs[i + 1] = (int32_t)at;
    }
    Py_END_ALLOW_THREADS
    result = PyTuple_Pack(2, offsets, data);
done:
    Py_XDECREF(offsets);
    Py_XDECREF(data);
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&numbers);
    return result;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS, "Decode JSON lines into typed column buffers."},
    {"newlines", newlines, METH_O, "Positions (int64) of the newline bytes of a buffer."},
    {"prefixed_numbers", prefixed_numbers, METH_VARARGS,
     "Offsets and data of the strings prefix + number for int64 numbers."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_jsonlines", "JSON lines to typed column buffers (yyjson).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__jsonlines(void) { return PyModule_Create(&module); }
