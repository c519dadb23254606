/*
 * insn-count: a QEMU TCG plugin that counts the guest instructions executed, exactly, and prints
 * the count every time the instruction at address MARK runs (the first instruction of
 * examples/footprint.rs's `footprint_mark`): ../footprint.sh takes the differences.
 *
 *   gcc -shared -fPIC -O2 -DPLUGIN_VERSION=2 -o insn-count.so insn-count.c
 *   qemu-system-... -plugin ./insn-count.so,mark=0x2c82 ...
 *   stderr:  insn-count: mark <instructions executed before this one>   (one line a call)
 *            insn-count: total <instructions executed>                   (at exit)
 *
 * Every translated instruction gets a callback that runs before the instruction executes, so the
 * count is the number of instructions that started executing (a conditional instruction whose
 * condition fails counts; an instruction that faults counts once, as it would be retried only
 * after the handler). One vCPU (the machines here have one), so a plain counter.
 *
 * Debian's QEMU is built with plugin support but ships neither plugins nor the plugin header
 * (qemu-plugin.h), so the few declarations this needs are written out below, from the plugin
 * API (stable since its version 1; QEMU 9.0 and later refuse versions below 2: ../footprint.sh
 * passes PLUGIN_VERSION=1 to older QEMUs).
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef PLUGIN_VERSION
#define PLUGIN_VERSION 2
#endif

#define EXPORT __attribute__((visibility("default")))

/* The plugin API's types and functions used here (QEMU exports the functions). */
typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn,
                                            qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb,
                                    void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);

EXPORT int qemu_plugin_version = PLUGIN_VERSION;

static uint64_t mark = UINT64_MAX; /* the marker instruction's address */
static uint64_t count;             /* instructions executed so far */

static void on_insn(unsigned int vcpu, void *udata)
{
    (void)vcpu;
    (void)udata;
    count++;
}

static void on_mark(unsigned int vcpu, void *udata)
{
    (void)vcpu;
    (void)udata;
    fprintf(stderr, "insn-count: mark %" PRIu64 "\n", count);
    count++;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        int is_mark = qemu_plugin_insn_vaddr(insn) == mark;
        qemu_plugin_register_vcpu_insn_exec_cb(insn, is_mark ? on_mark : on_insn,
                                               QEMU_PLUGIN_CB_NO_REGS, NULL);
    }
}

static void on_qemu_exit(qemu_plugin_id_t id, void *udata)
{
    (void)id;
    (void)udata;
    fprintf(stderr, "insn-count: total %" PRIu64 "\n", count);
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const void *info, int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "mark=", 5) == 0) {
            mark = strtoull(argv[i] + 5, NULL, 0);
        } else {
            fprintf(stderr, "insn-count: unknown argument %s (mark=ADDRESS)\n", argv[i]);
            return 1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_qemu_exit, NULL);
    return 0;
}
