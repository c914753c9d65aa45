/* Hide CPU features from CPUID for one process, so that ONNX Runtime picks the kernels of a lesser CPU.
 *
 * Loaded with LD_PRELOAD. Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID, 0) makes every CPUID instruction raise
 * SIGSEGV; the handler runs the real CPUID, clears the bits named in ONNXBERT_HIDE_CPUID (a comma-separated list of
 * amx, avx512, avx512_vnni, avx_vnni) and steps over the instruction. Everything else runs natively, at full speed:
 * unlike an emulator this measures speed, but only of kernel choice on this silicon, not of another vendor's core.
 * glibc picks its string routines before this library loads, so those keep the real CPU's instructions.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define ARCH_SET_CPUID 0x1012
#define BIT(n) (1u << (n))

/* Per leaf (7.0 and 7.1) and register: the bits each name hides. */
struct hidden {
    uint32_t l7_ebx, l7_ecx, l7_edx, l71_eax, l71_edx;
};

static struct hidden hide;

static void add(const char *name) {
    if (strcmp(name, "amx") == 0) {
        hide.l7_edx |= BIT(22) | BIT(24) | BIT(25); /* AMX-BF16, AMX-TILE, AMX-INT8 */
        hide.l71_eax |= BIT(21);                   /* AMX-FP16 */
        hide.l71_edx |= BIT(8);                    /* AMX-COMPLEX */
    } else if (strcmp(name, "avx512") == 0) {
        hide.l7_ebx |= BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31);
        hide.l7_ecx |= BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14); /* VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ */
        hide.l7_edx |= BIT(2) | BIT(3) | BIT(8) | BIT(23);            /* 4VNNIW, 4FMAPS, VP2INTERSECT, FP16 */
        hide.l71_eax |= BIT(5);                                       /* AVX512-BF16 */
        hide.l71_edx |= BIT(19);                                      /* AVX10 */
    } else if (strcmp(name, "avx512_vnni") == 0) {
        hide.l7_ecx |= BIT(11);
    } else if (strcmp(name, "avx_vnni") == 0) {
        hide.l71_eax |= BIT(4) | BIT(23); /* AVX-VNNI, AVX-IFMA */
        hide.l71_edx |= BIT(4) | BIT(5);  /* AVX-VNNI-INT8, AVX-NE-CONVERT */
    } else {
        fprintf(stderr, "cpuid_mask: unknown feature %s\n", name);
        _exit(2);
    }
}

static void real_cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
}

static void on_segv(int sig, siginfo_t *info, void *raw) {
    (void)info;
    ucontext_t *context = raw;
    greg_t *reg = context->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)reg[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) { /* a real fault: let it kill the process as it would have */
        signal(sig, SIG_DFL);
        return;
    }
    uint32_t leaf = (uint32_t)reg[REG_RAX], sub = (uint32_t)reg[REG_RCX], r[4];
    real_cpuid(leaf, sub, r);
    if (leaf == 7 && sub == 0) {
        r[1] &= ~hide.l7_ebx;
        r[2] &= ~hide.l7_ecx;
        r[3] &= ~hide.l7_edx;
    } else if (leaf == 7 && sub == 1) {
        r[0] &= ~hide.l71_eax;
        r[3] &= ~hide.l71_edx;
    }
    reg[REG_RAX] = r[0];
    reg[REG_RBX] = r[1];
    reg[REG_RCX] = r[2];
    reg[REG_RDX] = r[3];
    reg[REG_RIP] += 2;
}

__attribute__((constructor)) static void start(void) {
    const char *names = getenv("ONNXBERT_HIDE_CPUID");
    if (names == NULL || *names == '\0') {
        return;
    }
    char copy[256];
    snprintf(copy, sizeof copy, "%s", names);
    for (char *name = strtok(copy, ","); name != NULL; name = strtok(NULL, ",")) {
        add(name);
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &action, NULL);
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        fprintf(stderr, "cpuid_mask: this kernel or CPU has no CPUID faulting\n");
        _exit(3);
    }
}
