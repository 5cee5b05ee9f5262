/* The list of test suites the runner executes, in order. Building with
 * -DTEST_SUITE_ONLY=name_tests runs a single suite (used while developing one
 * module without linking the rest). */
#ifndef SD_SUITES_H
#define SD_SUITES_H

#include "test.h"

#ifdef TEST_SUITE_ONLY
extern const TestCase TEST_SUITE_ONLY[];
static const TestCase *const all_suites[] = {TEST_SUITE_ONLY, NULL};
#else
extern const TestCase npy_tests[];
extern const TestCase safetensors_tests[];
extern const TestCase config_tests[];
extern const TestCase grad_tests[];
extern const TestCase linear_path_tests[];
extern const TestCase golden_tests[];
extern const TestCase grad_conv_tests[];
extern const TestCase golden_conv_tests[];
extern const TestCase conv_dnnl_tests[];
extern const TestCase images_tests[];
extern const TestCase train_tests[];
extern const TestCase spectral_tests[];
extern const TestCase report_tests[];
extern const TestCase sweep_tests[];
static const TestCase *const all_suites[] = {
    npy_tests,
    safetensors_tests,
    config_tests,
    grad_tests,
    linear_path_tests,
    golden_tests,
    grad_conv_tests,
    golden_conv_tests,
    conv_dnnl_tests,
    images_tests,
    train_tests,
    spectral_tests,
    report_tests,
    sweep_tests,
    NULL,
};
#endif

#endif
