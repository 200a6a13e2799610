/* The HTML scanner's tokenizer in C: relay/detect/htmlscan.py's one-pass regex (the rules of
 * relay/detect/htmlgrammar.py: WHATWG HTML 13.2.5, with that module's Rule 6), as a state machine.
 *
 * Stage: detection (pure; no I/O, no global state). Input: one str and htmlscan.LAYOUT (the
 * regex's group numbers). Output: one item per tag the regex would report, in document order:
 * (regs, end, head, plain), the regex match's group spans (code points, as Python indexes the
 * str; (-1, -1) for a group that did not take part), its end, the strings of htmlscan._HEAD's
 * groups, and plain (Rule 5) or None. htmlscan reads an item exactly as it reads a match.
 *
 * Rule 1: what the regex's quiet run skips is skipped here: text, comments (to "-->" or
 *         "--!>"), bogus comments, end tags with their attributes, the content of raw text
 *         elements (title, textarea, script, xmp, iframe, noembed, noframes; plaintext to the
 *         end), and start tags that cannot fetch. Attributes are tokenized as the standard
 *         does: a quote opens a value only after "=", a tag ends at the first ">" outside a
 *         quoted value, and whatever is unterminated runs to the end of the text.
 * Rule 2: reported are <style> elements (with their CSS span), the elements of
 *         htmlgrammar.IMAGE_ELEMENTS (with the first of each captured attribute, as
 *         htmlgrammar.first_attr captures it), raw text elements whose start tag may hold a
 *         hook and every <iframe>, tags whose name the quiet grammar refuses (_QUIET_TAG_NAME),
 *         and any other start tag with an attribute named "background" or with "url(", "-set("
 *         or a backslash anywhere in it. That is the regex's set or a superset of it: a tag
 *         reported here and not there has no hook, and htmlscan reads nothing from it.
 * Rule 3: names compare after lower-casing ASCII letters only, as HTML does: no other
 *         character is a letter (the regex, on a text Python cannot lower-case in place, reads
 *         with IGNORECASE and may take a dotted capital I for an "i"; this reader does not).
 * Rule 4: linear time on any input: every loop moves forward, and each character is read a
 *         bounded number of times (tokenized once, looked at again for a hook or a name);
 *         bounded memory (the items).
 * Rule 5: plain is the URL span of an <img> that htmlscan's fast path alone reads (a src, no
 *         srcset, label, background value or style hook), found as that path finds it.
 * tests/detect/test_tagscan.py compares the items' references with the regex's, on generated,
 * shipped, hostile and non-ASCII HTML.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    int kind;
    const void *data;
    Py_ssize_t n;
} Text;

static inline Py_UCS4 at(const Text *t, Py_ssize_t i) { return PyUnicode_READ(t->kind, t->data, i); }

static inline Py_UCS4 folded(const Text *t, Py_ssize_t i) {
    Py_UCS4 c = at(t, i);
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

static inline int is_space(Py_UCS4 c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

static inline int is_letter(Py_UCS4 c) { return c >= 'a' && c <= 'z'; }

/* The first offset >= i and < n holding c, or n. */
static Py_ssize_t find_within(const Text *t, Py_ssize_t i, Py_ssize_t n, Py_UCS4 c) {
    if (i >= n) return n;
    if (t->kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *s = t->data;
        const Py_UCS1 *p = memchr(s + i, (int)c, (size_t)(n - i));
        return p == NULL ? n : p - s;
    }
    if (t->kind == PyUnicode_2BYTE_KIND) {
        /* Four code units at a time (most newsletters are two-byte strings: one emoji or
         * typographic quote is enough): a lane equal to c is a zero lane of w ^ pattern, and
         * (x - 1s) & ~x & high bits is non-zero exactly when some lane of x is zero. */
        const Py_UCS2 *s = t->data;
        const uint64_t ones = 0x0001000100010001ULL, high = 0x8000800080008000ULL;
        const uint64_t pattern = ones * (uint64_t)c;
        for (; i + 4 <= n; i += 4) {
            uint64_t w;
            memcpy(&w, s + i, sizeof w);
            uint64_t x = w ^ pattern;
            if ((x - ones) & ~x & high) break;
        }
        for (; i < n; i++)
            if (s[i] == c) return i;
        return n;
    }
    const Py_UCS4 *s = t->data;
    for (; i < n; i++)
        if (s[i] == c) return i;
    return n;
}

/* The first offset >= i holding c, or the text's length. */
static Py_ssize_t find_char(const Text *t, Py_ssize_t i, Py_UCS4 c) { return find_within(t, i, t->n, c); }

/* Whether the text at i spells word (lower-case ASCII), ASCII case ignored. */
static int spells(const Text *t, Py_ssize_t i, const char *word) {
    for (; *word; word++, i++)
        if (i >= t->n || folded(t, i) != (Py_UCS4)(unsigned char)*word) return 0;
    return 1;
}

/* After a "<" or "</" followed by a letter at i: the end of the tag name. */
static Py_ssize_t name_end(const Text *t, Py_ssize_t i) {
    while (i < t->n) {
        Py_UCS4 c = at(t, i);
        if (is_space(c) || c == '/' || c == '<' || c == '>') break;
        i++;
    }
    return i;
}

/* The first-of-their-name attributes htmlscan reads from an image element, in this order. */
static const char *const CAPTURED[] = {"src",    "srcset",     "style",
                                       "width",  "height",     "background",
                                       "data-relay-purpose"};
enum { SRC, SRCSET, STYLE, WIDTH, HEIGHT, BACKGROUND, LABEL, N_CAPTURED };

typedef struct {
    Py_ssize_t start, end;
} Span;

typedef struct {
    /* Each captured attribute as htmlgrammar.first_attr's group: from the end of its name to
     * the end of its value ("=" and spaces included), empty without a value, -1 if absent. */
    Span value[N_CAPTURED];
    Py_ssize_t label_name; /* where the label attribute's name starts */
    int background;        /* an attribute named "background" (Rule 2) */
} Attrs;

static void no_attrs(Attrs *a) {
    for (int k = 0; k < N_CAPTURED; k++) a->value[k].start = a->value[k].end = -1;
    a->label_name = -1;
    a->background = 0;
}

static int named(const Text *t, Py_ssize_t start, Py_ssize_t end, const char *const *names,
                 int count);

/* htmlgrammar.ATTRS then TAG_END from i: the offset after the tag's ">", or n; with attrs,
 * the captured attributes (with capture) and whether one is named "background". */
static Py_ssize_t tag_end(const Text *t, Py_ssize_t i, Attrs *attrs, int capture) {
    Py_ssize_t n = t->n;
    while (i < n) {
        Py_UCS4 c = at(t, i);
        if (c == '>') return i + 1;
        if (is_space(c) || c == '/') {
            i++;
            continue;
        }
        Py_ssize_t name = i++; /* its first character may be "=", "<" or a quote */
        while (i < n) {
            c = at(t, i);
            if (is_space(c) || c == '/' || c == '>' || c == '=') break;
            i++;
        }
        Py_ssize_t name_stop = i, value_end = i;
        Py_ssize_t j = i;
        while (j < n && is_space(at(t, j))) j++;
        if (j < n && at(t, j) == '=') {
            j++;
            while (j < n && is_space(at(t, j))) j++;
            if (j < n && (at(t, j) == '"' || at(t, j) == '\'')) {
                Py_ssize_t close = find_char(t, j + 1, at(t, j));
                value_end = close >= n ? n : close + 1;
            } else {
                while (j < n) {
                    c = at(t, j);
                    if (is_space(c) || c == '>') break;
                    j++;
                }
                value_end = j;
            }
            i = value_end;
        } /* else no value: the spaces after the name separate it from the next one */
        if (attrs == NULL) continue;
        Py_UCS4 first = folded(t, name);
        int k = -1;
        if (capture && (first == 's' || first == 'w' || first == 'h' || first == 'b' || first == 'd'))
            k = named(t, name, name_stop, CAPTURED, N_CAPTURED);
        else if (first == 'b' && name_stop - name == 10 && spells(t, name, "background"))
            k = BACKGROUND;
        if (k == BACKGROUND) attrs->background = 1;
        if (k >= 0 && capture && attrs->value[k].start < 0) {
            attrs->value[k].start = name_stop;
            attrs->value[k].end = value_end;
            if (k == LABEL) attrs->label_name = name;
        }
    }
    return n;
}

/* Whether t[start:end] holds "url(", "-set(" or a backslash (Rule 2): found from their "(" and
 * the backslash, which find_char finds at memchr's speed in the usual one-byte text. */
static int has_hook(const Text *t, Py_ssize_t start, Py_ssize_t end) {
    if (find_within(t, start, end, '\\') < end) return 1;
    for (Py_ssize_t i = find_within(t, start, end, '('); i < end; i = find_within(t, i + 1, end, '(')) {
        if (i - start >= 3 && spells(t, i - 3, "url(")) return 1;
        if (i - start >= 4 && spells(t, i - 4, "-set(")) return 1;
    }
    return 0;
}

/* The offset of "</name" followed by space, "/", ">" or the end, from i; or n. */
static Py_ssize_t raw_end(const Text *t, Py_ssize_t i, const char *name) {
    size_t len = strlen(name);
    Py_ssize_t n = t->n;
    for (i = find_char(t, i, '<'); i < n; i = find_char(t, i + 1, '<')) {
        if (i + 1 < n && at(t, i + 1) == '/' && spells(t, i + 2, name)) {
            Py_ssize_t after = i + 2 + (Py_ssize_t)len;
            if (after >= n) return i;
            Py_UCS4 c = at(t, after);
            if (is_space(c) || c == '/' || c == '>') return i;
        }
    }
    return n;
}

/* After a "<!--" at i - 4: the end of the comment (htmlgrammar.COMMENT). */
static Py_ssize_t comment_end(const Text *t, Py_ssize_t i) {
    Py_ssize_t n = t->n;
    if (i < n && at(t, i) == '>') return i + 1;
    if (i + 1 < n && at(t, i) == '-' && at(t, i + 1) == '>') return i + 2;
    for (i = find_char(t, i, '-'); i < n; i = find_char(t, i + 1, '-')) {
        if (i + 2 < n && at(t, i + 1) == '-') {
            if (at(t, i + 2) == '>') return i + 3;
            if (i + 3 < n && at(t, i + 2) == '!' && at(t, i + 3) == '>') return i + 4;
        }
    }
    return n;
}

/* To the first ">" from i, past it (bogus comments, "<!--[if ...]>"). */
static Py_ssize_t past_gt(const Text *t, Py_ssize_t i) {
    Py_ssize_t gt = find_char(t, i, '>');
    return gt >= t->n ? t->n : gt + 1;
}

static const char *const RAW_NAMES[] = {"title",   "textarea", "script",    "xmp",
                                        "iframe",  "noembed",  "noframes",  "plaintext"};
static const char *const IMAGE_NAMES[] = {
    "img",  "image", "source", "amp-img", "amp-anim", "input", "v:image", "v:fill", "v:imagedata",
    "link", "base",  "video",  "audio",   "track",    "object", "embed",  "frame",  "feimage"};
/* htmlgrammar._QUIET_TAG_NAME: a tag whose name starts so is never quiet. */
static const char *const LOUD_PREFIXES[] = {
    "img",   "image",  "input", "iframe", "source", "style", "script",   "amp-",
    "v:",    "title",  "textarea", "track", "xmp",  "noembed", "noframes", "plaintext",
    "link",  "base",   "video", "audio",  "object", "embed", "frame",    "feimage"};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* The index in names of the name t[start:end] (ASCII case ignored), or -1. */
static int named(const Text *t, Py_ssize_t start, Py_ssize_t end, const char *const *names,
                 int count) {
    for (int k = 0; k < count; k++)
        if ((Py_ssize_t)strlen(names[k]) == end - start && spells(t, start, names[k])) return k;
    return -1;
}

/* A tag name, ASCII letters lower-cased, any other character but ASCII written as 1: only its
 * first 15 characters are kept (longer than any name or prefix compared). */
typedef struct {
    char s[16];
    size_t len;
} Name;

static void read_name(const Text *t, Py_ssize_t start, Py_ssize_t end, Name *name) {
    name->len = (size_t)(end - start);
    size_t k = 0;
    for (; k < name->len && k < sizeof(name->s) - 1; k++) {
        Py_UCS4 c = folded(t, start + (Py_ssize_t)k);
        name->s[k] = (c > 0 && c < 128) ? (char)c : '\x01';
    }
    name->s[k] = '\0';
}

static int is_name(const Name *name, const char *word) {
    return name->len == strlen(word) && strcmp(name->s, word) == 0;
}

static int name_index(const Name *name, const char *const *names, int count) {
    for (int k = 0; k < count; k++)
        if (names[k][0] == name->s[0] && is_name(name, names[k])) return k;
    return -1;
}

static int loud(const Name *name) {
    for (int k = 0; k < COUNT(LOUD_PREFIXES); k++) {
        if (LOUD_PREFIXES[k][0] != name->s[0]) continue;
        size_t len = strlen(LOUD_PREFIXES[k]);
        if (name->len >= len && strncmp(name->s, LOUD_PREFIXES[k], len) == 0) return 1;
    }
    return 0;
}

/* The group numbers of htmlscan's regex (htmlscan.LAYOUT), so that an item here reads as the
 * regex's match would: regs[group] = (start, end), (-1, -1) for a group that did not take
 * part. */
enum { G_COUNT, G_AT, G_CSS, G_NAME, G_SRC, G_SRCSET, G_STYLE, G_WIDTH, G_HEIGHT, G_BACKGROUND,
       G_AT_LABEL, G_LABEL, G_RAW, G_TAG, N_LAYOUT };
/* htmlscan._HEAD: the groups whose strings it reads first, in its order. */
static const int HEAD[] = {G_WIDTH, G_HEIGHT, G_STYLE, G_NAME, G_SRCSET, G_LABEL};
static const int CAPTURED_GROUP[N_CAPTURED] = {G_SRC,    G_SRCSET,     G_STYLE, G_WIDTH,
                                               G_HEIGHT, G_BACKGROUND, G_LABEL};

typedef struct {
    const Text *t;
    PyObject *source; /* the str, for the head strings */
    Py_ssize_t layout[N_LAYOUT];
    PyObject *absent; /* (-1, -1) */
    PyObject *out;
} Scan;

/* (start, end) as a new tuple, without Py_BuildValue's format parsing (items are many). */
static PyObject *pair(Py_ssize_t start, Py_ssize_t end) {
    PyObject *first = PyLong_FromSsize_t(start), *second = PyLong_FromSsize_t(end);
    PyObject *span = first && second ? PyTuple_New(2) : NULL;
    if (span == NULL) {
        Py_XDECREF(first);
        Py_XDECREF(second);
        return NULL;
    }
    PyTuple_SET_ITEM(span, 0, first);
    PyTuple_SET_ITEM(span, 1, second);
    return span;
}

static int put(PyObject *regs, Py_ssize_t index, Py_ssize_t start, Py_ssize_t end) {
    PyObject *span = pair(start, end);
    if (span == NULL) return -1;
    PyTuple_SET_ITEM(regs, index, span);
    return 0;
}

/* One reported tag: (regs, end, head, plain), as htmlscan reads a match. spans[g] holds the
 * span of group g (layout order) or start -1; plain, when not NULL, is the URL span of a plain
 * image (Rule 5). */
static int report(Scan *scan, Py_ssize_t p, Py_ssize_t end, const Span *spans, const Span *plain) {
    Py_ssize_t count = scan->layout[G_COUNT] + 1;
    PyObject *regs = PyTuple_New(count);
    PyObject *head = PyTuple_New(6);
    PyObject *item = NULL;
    if (regs == NULL || head == NULL) goto fail;
    for (Py_ssize_t g = 0; g < count; g++) {
        Py_INCREF(scan->absent);
        PyTuple_SET_ITEM(regs, g, scan->absent);
    }
    for (int g = G_AT; g < N_LAYOUT; g++) {
        Py_ssize_t index = scan->layout[g];
        if (spans[g].start < 0 || index <= 0 || index >= count) continue;
        Py_DECREF(PyTuple_GET_ITEM(regs, index));
        PyTuple_SET_ITEM(regs, index, NULL);
        if (put(regs, index, spans[g].start, spans[g].end) < 0) goto fail;
    }
    Py_DECREF(PyTuple_GET_ITEM(regs, 0));
    PyTuple_SET_ITEM(regs, 0, NULL);
    if (put(regs, 0, p, end) < 0) goto fail;
    for (int h = 0; h < 6; h++) {
        const Span *span = &spans[HEAD[h]];
        PyObject *value = span->start < 0 ? Py_NewRef(Py_None)
                                          : PyUnicode_Substring(scan->source, span->start,
                                                                span->end);
        if (value == NULL) goto fail;
        PyTuple_SET_ITEM(head, h, value);
    }
    PyObject *stop = PyLong_FromSsize_t(end);
    PyObject *url = plain == NULL ? Py_NewRef(Py_None) : pair(plain->start, plain->end);
    item = stop && url ? PyTuple_New(4) : NULL;
    if (item == NULL) {
        Py_XDECREF(stop);
        Py_XDECREF(url);
        goto fail;
    }
    PyTuple_SET_ITEM(item, 0, regs);
    PyTuple_SET_ITEM(item, 1, stop);
    PyTuple_SET_ITEM(item, 2, head);
    PyTuple_SET_ITEM(item, 3, url);
    int failed = PyList_Append(scan->out, item);
    Py_DECREF(item);
    return failed;
fail:
    Py_XDECREF(regs);
    Py_XDECREF(head);
    return -1;
}

/* Rule 5: an <img> with a src and no srcset, label, background value or style hook is read by
 * htmlscan's fast path alone; its URL span is found here as that path finds it (htmlattrs
 * eq_value, then one pair of quotes, then HTML whitespace trimmed): url may come out empty. */
static int plain_image(const Text *t, const Attrs *attrs, Span *url) {
    const Span *src = &attrs->value[SRC], *style = &attrs->value[STYLE];
    const Span *background = &attrs->value[BACKGROUND];
    if (src->start < 0 || attrs->value[SRCSET].start >= 0 || attrs->value[LABEL].start >= 0)
        return 0;
    if (background->start != background->end) return 0;
    if (style->start >= 0 && has_hook(t, style->start, style->end)) return 0;
    Py_ssize_t start = find_within(t, src->start, src->end, '='), end = src->end;
    if (start >= end) {
        url->start = url->end = end;
        return 1;
    }
    start++;
    while (start < end && is_space(at(t, start))) start++;
    if (start < end && (at(t, start) == '"' || at(t, start) == '\'')) {
        start++;
        if (at(t, end - 1) == at(t, start - 1)) end--;
    }
    while (start < end && is_space(at(t, start))) start++;
    while (end > start && is_space(at(t, end - 1))) end--;
    url->start = start;
    url->end = end;
    return 1;
}

static void no_spans(Span *spans, Py_ssize_t p) {
    for (int g = 0; g < N_LAYOUT; g++) spans[g].start = spans[g].end = -1;
    spans[G_AT].start = spans[G_AT].end = p;
}

/* A start tag whose "<" is at p and whose name is t[p + 1:q]: where reading goes on, after
 * reporting the tag when Rule 2 says so (-1 on a Python error). */
static Py_ssize_t start_tag(Scan *scan, Py_ssize_t p, Py_ssize_t q) {
    const Text *t = scan->t;
    Py_ssize_t n = t->n;
    Span spans[N_LAYOUT];
    no_spans(spans, p);
    int cut = q < n && at(t, q) == '<'; /* htmlgrammar Rule 6: the tag ends at that "<" */
    Name name;
    read_name(t, p + 1, q, &name);
    if (!cut && is_name(&name, "style")) {
        Py_ssize_t css = tag_end(t, q, NULL, 0);
        Py_ssize_t close = raw_end(t, css, "style");
        Py_ssize_t end = close >= n ? n : past_gt(t, close);
        spans[G_CSS].start = css;
        spans[G_CSS].end = close;
        return report(scan, p, end, spans, NULL) < 0 ? -1 : end;
    }
    int raw = cut ? -1 : name_index(&name, RAW_NAMES, COUNT(RAW_NAMES));
    Attrs attrs;
    no_attrs(&attrs);
    if (raw >= 0) {
        Py_ssize_t end = tag_end(t, q, &attrs, 0);
        int iframe = strcmp(RAW_NAMES[raw], "iframe") == 0;
        Py_ssize_t content_end =
            strcmp(RAW_NAMES[raw], "plaintext") == 0 ? n : raw_end(t, end, RAW_NAMES[raw]);
        if (iframe || attrs.background || has_hook(t, p, end)) {
            spans[G_RAW].start = spans[G_RAW].end = p + 1;
            if (report(scan, p, content_end, spans, NULL) < 0) return -1;
        }
        return content_end;
    }
    int image = name_index(&name, IMAGE_NAMES, COUNT(IMAGE_NAMES));
    if (image >= 0) {
        Py_ssize_t end = cut ? q : tag_end(t, q, &attrs, 1);
        spans[G_NAME].start = p + 1;
        spans[G_NAME].end = q;
        for (int k = 0; k < N_CAPTURED; k++) spans[CAPTURED_GROUP[k]] = attrs.value[k];
        if (attrs.label_name >= 0) spans[G_AT_LABEL].start = spans[G_AT_LABEL].end = attrs.label_name + 1;
        Span url;
        int is_plain = image == 0 && plain_image(t, &attrs, &url);
        return report(scan, p, end, spans, is_plain ? &url : NULL) < 0 ? -1 : end;
    }
    Py_ssize_t end = cut ? q : tag_end(t, q, &attrs, 0);
    if (loud(&name) || attrs.background || has_hook(t, p, end)) {
        spans[G_TAG].start = p + 1;
        spans[G_TAG].end = q;
        if (report(scan, p, end, spans, NULL) < 0) return -1;
    }
    return end;
}

static PyObject *scan(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *source, *layout;
    if (!PyArg_ParseTuple(args, "UO!:scan", &source, &PyTuple_Type, &layout)) return NULL;
    if (PyUnicode_READY(source) < 0) return NULL;
    if (PyTuple_GET_SIZE(layout) != N_LAYOUT) {
        PyErr_Format(PyExc_ValueError, "scan(): layout must hold %d group numbers", N_LAYOUT);
        return NULL;
    }
    Text text = {PyUnicode_KIND(source), PyUnicode_DATA(source), PyUnicode_GET_LENGTH(source)};
    Scan state = {.t = &text, .source = source};
    for (int g = 0; g < N_LAYOUT; g++) {
        state.layout[g] = PyLong_AsSsize_t(PyTuple_GET_ITEM(layout, g));
        if (state.layout[g] == -1 && PyErr_Occurred()) return NULL;
    }
    state.absent = pair(-1, -1);
    state.out = PyList_New(0);
    if (state.absent == NULL || state.out == NULL) goto fail;
    const Text *t = &text;
    Py_ssize_t n = t->n;
    Py_ssize_t p = find_char(t, 0, '<');
    while (p < n) {
        Py_ssize_t next = p + 1; /* a "<" that starts nothing is text */
        if (p + 1 < n) {
            Py_UCS4 c = folded(t, p + 1);
            if (is_letter(c)) {
                next = start_tag(&state, p, name_end(t, p + 1));
                if (next < 0) goto fail;
            } else if (c == '/') {
                if (p + 2 < n && is_letter(folded(t, p + 2))) { /* an end tag, attributes and all */
                    Py_ssize_t q = name_end(t, p + 2);
                    next = q < n && at(t, q) == '<' ? q : tag_end(t, q, NULL, 0);
                } else {
                    next = past_gt(t, p + 2);
                }
            } else if (c == '!') {
                if (spells(t, p + 2, "--")) {
                    next = spells(t, p + 4, "[if") ? past_gt(t, p + 7) : comment_end(t, p + 4);
                } else {
                    next = past_gt(t, p + 2);
                }
            } else if (c == '?') {
                next = past_gt(t, p + 2);
            }
        }
        p = find_char(t, next, '<');
    }
    Py_DECREF(state.absent);
    return state.out;
fail:
    Py_XDECREF(state.absent);
    Py_XDECREF(state.out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(text, layout) -> [(regs, end, head)] for each tag the HTML scanner must read"},
    {NULL, NULL, 0, NULL},
};
static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "relay.detect._tagscan",
    .m_doc = "The tags of an HTML text that can fetch something (see _tagscan.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__tagscan(void) { return PyModule_Create(&module); }
