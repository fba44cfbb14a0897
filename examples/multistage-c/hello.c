#include <stdio.h>
#include <sys/utsname.h>

int main(void) {
    struct utsname u;
    if (uname(&u) != 0) {
        perror("uname");
        return 1;
    }
    printf("hello from C, compiled by gcc %d.%d on Debian, running on %s\n", __GNUC__, __GNUC_MINOR__, u.machine);
    return 0;
}
