/* Exec'd by workload.c's child: a binary of its own, with a syscall of its
 * own (sysinfo), so the recording must follow the exec. */
#include <sys/sysinfo.h>

int main(void) {
    struct sysinfo s;
    return sysinfo(&s) == 0 ? 0 : 1;
}
