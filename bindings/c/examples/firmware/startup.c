/* Start-up code of the C training firmware (Cortex-M4F, newlib-nano with rdimon semihosting).
 *
 * The vector table goes to address 0 (section .vectors, see mps2-an386.ld): the initial stack
 * pointer, the reset handler, and fault handlers that end the program with a failure. The reset
 * handler enables the FPU (the code is built for -mfloat-abi=hard: the first float instruction
 * would fault otherwise), copies .data from flash, zeroes .bss, runs the constructors, opens
 * semihosting's stdio and calls exit(main()).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern uint32_t _estack, _sidata, _sdata, _edata, _sbss, _ebss; /* mps2-an386.ld */
extern void __libc_init_array(void);
extern void initialise_monitor_handles(void);
extern int main(void);

/* Arm semihosting: r0 = operation, r1 = argument, `bkpt 0xab` (QEMU: -semihosting-config). */
static uint32_t semihosting(uint32_t op, const void *arg) {
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

/* A fault ends the program with exit status 3 (exit() is no use here: the fault may be in
 * newlib). SYS_EXIT_EXTENDED (0x20) with reason ADP_Stopped_ApplicationExit and the status;
 * a host without it gets SYS_EXIT (0x18) with RunTimeErrorUnknown, which QEMU makes status 1.
 * (A normal exit(n) is rdimon's: it finds the extended call and QEMU exits with n.) */
static void fault(void) {
    const uint32_t block[2] = {0x20026u, 3};
    semihosting(0x20u, block);
    semihosting(0x18u, (const void *)0x20023u);
    for (;;) {
    }
}

/* The stack a call needs, measured (the painted-stack high-water mark): fills 16 KiB of the free
 * stack below the caller with a pattern, calls fn, and returns how many bytes below this
 * function's stack pointer the pattern was overwritten. No interrupt is enabled, so only fn
 * (and the call itself) writes there. */
size_t stack_used_by(void (*fn)(void)) {
    enum { WORDS = 4096, PATTERN = 0x57ac57acu };
    uint32_t *sp, *w;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    uint32_t *bottom = sp - WORDS > &_ebss ? sp - WORDS : &_ebss;
    for (w = bottom; w < sp - 16; w++) *(volatile uint32_t *)w = PATTERN; /* 64 bytes margin */
    fn();
    for (w = bottom; w < sp && *(volatile uint32_t *)w == PATTERN; w++) {
    }
    return (size_t)((char *)sp - (char *)w);
}

/* __libc_init_array and exit() call these (crti.o and crtn.o, dropped by -nostartfiles). */
void _init(void) {}
void _fini(void) {}

/* In a function of its own: Reset_Handler enables the FPU before any of this runs. */
static void __attribute__((noreturn, noinline)) start(void) {
    memcpy(&_sdata, &_sidata, (size_t)((char *)&_edata - (char *)&_sdata));
    memset(&_sbss, 0, (size_t)((char *)&_ebss - (char *)&_sbss));
    __libc_init_array();
    initialise_monitor_handles();
    exit(main());
}

void Reset_Handler(void) {
    /* CPACR: full access to coprocessors 10 and 11 (the FPU), before any float instruction. */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    start();
}

typedef void (*handler)(void);
__attribute__((section(".vectors"), used)) static const handler vectors[16] = {
    (handler)&_estack, /* initial stack pointer */
    Reset_Handler,
    fault, /* NMI */
    fault, /* HardFault */
    fault, /* MemManage */
    fault, /* BusFault */
    fault, /* UsageFault */
    0, 0, 0, 0,
    fault, /* SVCall */
    fault, /* DebugMonitor */
    0,
    fault, /* PendSV */
    fault, /* SysTick */
};
