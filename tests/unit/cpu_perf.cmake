# CPU backend micro-benchmarks (tests/bench/bench_cpu.c): memory bandwidth and kf_cpu_matmul
# throughput for docs/benchmarks.md. Built as a program, not a timed test; the only ctest is
# `bench_cpu check`, which compares a small matmul of every weight type with a double-precision
# reference (no timing involved).
if(NOT TARGET kf_engine)
    return()
endif()
add_executable(bench_cpu ${CMAKE_CURRENT_LIST_DIR}/../bench/bench_cpu.c)
target_link_libraries(bench_cpu PRIVATE kf_engine kf_warnings)
target_include_directories(bench_cpu PRIVATE
    ${CMAKE_SOURCE_DIR}/inference/backends/cpu ${CMAKE_SOURCE_DIR}/inference)
add_test(NAME unit_bench_cpu_check COMMAND bench_cpu check)
set_tests_properties(unit_bench_cpu_check PROPERTIES LABELS unit TIMEOUT 120)
# Same code generation as kf_engine, so the bandwidth loop is what the kernels would see.
if(KF_NATIVE)
    target_compile_options(bench_cpu PRIVATE -O3 -march=native -mno-avx512vnni)
endif()
