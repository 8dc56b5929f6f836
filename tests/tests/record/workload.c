/* The recorded workload of tests/tests/record_profile.rs.
 *
 * Modes (argv[1]):
 *   plain  - a thread, a fork, and an exec of HELPER (argv[2]) in the child;
 *            every call deterministic, so that strace's list of another
 *            run is the same set.
 *   extra  - as plain, then one getcpu (raw syscall), which a profile
 *            recorded from `plain` refuses: prints "getcpu EPERM" and exits 0
 *            if it got EPERM, exits 3 otherwise.
 *   int80  - getpid through int 0x80 (i386, number 20) and through syscall
 *            (x86_64, number 39); exits 0 if both return the same pid.
 *   quick  - uname, then exit_group at once (the start-up race test).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <errno.h>
#include <unistd.h>

static void *thread_main(void *arg) {
    (void)arg;
    char buf[64];
    /* getcwd: made by the thread alone. */
    syscall(SYS_getcwd, buf, sizeof buf);
    return NULL;
}

static int plain(const char *helper) {
    pthread_t t;
    if (pthread_create(&t, NULL, thread_main, NULL) != 0)
        return 10;
    /* Wait until the thread is gone, so that pthread_join never blocks in
     * futex: the set of calls stays the same every run. */
    struct timespec ts = {0, 20000000};
    for (;;) {
        /* The thread is done once /proc says one thread is left; a short
         * sleep between checks keeps the calls the same every run. */
        nanosleep(&ts, NULL);
        FILE *f = fopen("/proc/self/status", "r");
        if (!f)
            return 12;
        char line[256];
        int threads = 0;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "Threads: %d", &threads) == 1)
                break;
        fclose(f);
        if (threads == 1)
            break;
    }
    pthread_join(t, NULL);
    pid_t child = fork();
    if (child < 0)
        return 13;
    if (child == 0) {
        char *argv[] = {(char *)helper, NULL};
        char *envp[] = {NULL};
        execve(helper, argv, envp);
        _exit(14);
    }
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return 15;
    static const char done[] = "done\n";
    write(1, done, sizeof done - 1);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    if (strcmp(argv[1], "quick") == 0) {
        struct utsname u;
        uname(&u);
        syscall(SYS_exit_group, 0);
    }
    if (strcmp(argv[1], "int80") == 0) {
        long pid32;
        __asm__ volatile("int $0x80" : "=a"(pid32) : "a"(20) : "memory");
        long pid64 = syscall(SYS_getpid);
        return pid32 == pid64 && pid64 > 0 ? 0 : 4;
    }
    if (argc < 3)
        return 2;
    int rc = plain(argv[2]);
    if (rc != 0)
        return rc;
    if (strcmp(argv[1], "extra") == 0) {
        unsigned cpu = 0;
        errno = 0;
        long r = syscall(SYS_getcpu, &cpu, NULL, NULL);
        if (r == -1 && errno == EPERM) {
            static const char msg[] = "getcpu EPERM\n";
            write(1, msg, sizeof msg - 1);
            return 0;
        }
        return 3;
    }
    return 0;
}
