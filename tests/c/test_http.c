/* test_http.c — unit tests of http.c's header-block parser, the one both
 * the Lua binding and any C caller read response headers with. */
#include "check.h"
#include "http.h"

static void test_headers(void)
{
    const char *block = "HTTP/1.1 200 OK\r\n"
                        "Content-Type: application/json\r\n"
                        "X-Empty:\r\n"
                        "Retry-After: \t 7  \r\n"
                        "no colon here\r\n"
                        "X-Last:tail";
    const char *pos = block;
    struct orch_http_header h;
    static const char *const want[][2] = {
        {"Content-Type", "application/json"}, {"X-Empty", ""}, {"Retry-After", "7"}, {"X-Last", "tail"}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        CHECK(orch_http_header_next(&pos, &h) == 1);
        char name[64], value[64];
        snprintf(name, sizeof name, "%.*s", (int)h.name_len, h.name);
        snprintf(value, sizeof value, "%.*s", (int)h.value_len, h.value);
        CHECK_STR(name, want[i][0]);
        CHECK_STR(value, want[i][1]);
    }
    CHECK(orch_http_header_next(&pos, &h) == 0);
    CHECK(*pos == '\0');
    CHECK(orch_http_header_next(&pos, &h) == 0); /* stays at the end */
    pos = "";
    CHECK(orch_http_header_next(&pos, &h) == 0);
    pos = "HTTP/2 204\r\n\r\n";
    CHECK(orch_http_header_next(&pos, &h) == 0);
}

int main(void)
{
    test_headers();
    return check_report();
}
