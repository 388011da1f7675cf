/* curl_floor.c — the least a libcurl multi client can spend on the LLM
 * benchmark: N POSTs of the bench's request body at concurrency C over
 * epoll, with the socket and timer callbacks orch uses, kept-alive
 * connections and reused easy handles, and nothing else (no Lua, no
 * journal, no output). Its CPU seconds and max RSS are the floor that
 * orch's own figures are measured against in bench/run.sh.
 *
 *   curl_floor URL N C */
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>

#include <curl/curl.h>

static int epfd;
static long timeout_ms = -1;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)e;
    (void)userp;
    (void)socketp;
    struct epoll_event ev = {0};
    ev.data.fd = s;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, s, &ev);
        return 0;
    }
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, s, &ev) != 0)
        epoll_ctl(epfd, EPOLL_CTL_ADD, s, &ev);
    return 0;
}

static int on_timer(CURLM *m, long ms, void *userp)
{
    (void)m;
    (void)userp;
    timeout_ms = ms;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: curl_floor URL N C\n");
        return 2;
    }
    const char *url = argv[1];
    int n = atoi(argv[2]), c = atoi(argv[3]);
    static const char body[] = "{\"messages\":[{\"content\":\"Classify: review number "
                               "1\",\"role\":\"user\"}],\"model\":\"gpt-4o-mini\"}";
    curl_global_init(CURL_GLOBAL_DEFAULT);
    epfd = epoll_create1(0);
    CURLM *multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)c);
    struct curl_slist *headers = NULL;
    headers = curl_slist_append(headers, "content-type: application/json");
    headers = curl_slist_append(headers, "authorization: Bearer bench");
    int started = 0, done = 0, failed = 0, running = 0;
    for (; started < c && started < n; started++) {
        CURL *e = curl_easy_init();
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_multi_add_handle(multi, e);
    }
    while (done < n) {
        struct epoll_event evs[256];
        int k = epoll_wait(epfd, evs, 256, timeout_ms < 0 ? 1000 : (int)timeout_ms);
        if (k == 0 || timeout_ms == 0) {
            timeout_ms = -1;
            curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        for (int i = 0; i < k; i++) {
            int flags = ((evs[i].events & EPOLLIN) ? CURL_CSELECT_IN : 0) |
                        ((evs[i].events & EPOLLOUT) ? CURL_CSELECT_OUT : 0);
            curl_multi_socket_action(multi, evs[i].data.fd, flags, &running);
        }
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left)) != NULL) {
            if (m->msg != CURLMSG_DONE)
                continue;
            CURL *e = m->easy_handle;
            long status = 0;
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
            failed += m->data.result != CURLE_OK || status != 200;
            curl_multi_remove_handle(multi, e);
            done++;
            if (started < n) {
                started++;
                curl_multi_add_handle(multi, e);
            } else {
                curl_easy_cleanup(e);
            }
        }
    }
    curl_slist_free_all(headers);
    curl_multi_cleanup(multi);
    curl_global_cleanup();
    printf("%d requests, %d failed\n", done, failed);
    return failed > 0;
}
