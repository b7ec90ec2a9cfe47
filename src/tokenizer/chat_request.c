/* chat_request.c: an OpenAI-style chat request (JSON) read into kiln_chat_msg entries.
 * The jansson tree is kept as the store: message strings point into it. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include "tokenizer/chat.h"
#include "util/alloc.h"
#include "util/error.h"

typedef struct req_store {
    json_t *root;
    json_t *made; /* strings made here (joined content parts, tool_calls text) */
} req_store;

static const char *keep(req_store *st, char *s) { /* s from json_dumps (malloc) */
    if (!s) return NULL;
    json_t *v = json_string(s);
    free(s);
    if (!v) return NULL;
    json_array_append_new(st->made, v);
    return json_string_value(v);
}

int kiln_chat_request_parse(const char *json, size_t len, kiln_chat_request *req, kiln_error *err) {
    memset(req, 0, sizeof *req);
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!root) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat request: JSON error at line %d: %s", je.line, je.text);
    json_t *msgs = json_object_get(root, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        json_decref(root);
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat request: \"messages\" must be a non-empty array");
    }
    req_store *st = kiln_calloc(1, sizeof *st);
    req->msgs = kiln_calloc(json_array_size(msgs), sizeof *req->msgs);
    if (!st || !req->msgs || !(st->made = json_array())) {
        kiln_free(st);
        kiln_free(req->msgs);
        json_decref(root);
        return KILN_ERR(err, KILN_ERR_OOM, "chat request: out of memory");
    }
    st->root = root;
    req->store = st;
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        kiln_chat_msg *o = &req->msgs[req->n_msgs++];
        json_t *role = json_object_get(m, "role"), *c = json_object_get(m, "content");
        if (!json_is_string(role)) {
            kiln_chat_request_free(req);
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat request: message %zu has no role", i);
        }
        o->role = json_string_value(role);
        if (json_is_string(c)) {
            o->content = json_string_value(c);
        } else if (json_is_array(c)) { /* text parts, joined */
            size_t k, tot = 0;
            json_t *part;
            json_array_foreach(c, k, part) tot += json_string_length(json_object_get(part, "text"));
            char *s = malloc(tot + 1);
            if (!s) continue;
            s[0] = 0;
            json_array_foreach(c, k, part) {
                json_t *tx = json_object_get(part, "text");
                if (json_is_string(tx)) strcat(s, json_string_value(tx));
            }
            o->content = keep(st, s);
        } else if (c && !json_is_null(c)) {
            kiln_chat_request_free(req);
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat request: message %zu content is neither text nor parts", i);
        }
        json_t *tc = json_object_get(m, "tool_calls");
        if (json_is_array(tc) && json_array_size(tc)) o->tool_calls_json = keep(st, json_dumps(tc, JSON_COMPACT));
        json_t *id = json_object_get(m, "tool_call_id"), *nm = json_object_get(m, "name");
        if (json_is_string(id)) o->tool_call_id = json_string_value(id);
        if (json_is_string(nm)) o->name = json_string_value(nm);
    }
    json_t *tools = json_object_get(root, "tools");
    if (json_is_array(tools) && json_array_size(tools))
        req->tools_json = (char *)keep(st, json_dumps(tools, JSON_COMPACT));
    return KILN_OK;
}

void kiln_chat_request_free(kiln_chat_request *req) {
    req_store *st = req->store;
    if (st) {
        json_decref(st->made);
        json_decref(st->root);
        kiln_free(st);
    }
    kiln_free(req->msgs);
    memset(req, 0, sizeof *req);
}
