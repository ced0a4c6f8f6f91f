# Unit tests of the sampler, chat templates and scheduler pieces that need no model file. The
# sources (and core/err.c) are compiled in directly so these tests build even while other
# modules change.
set(_kf_root ${CMAKE_CURRENT_LIST_DIR}/../..)
kf_add_test(NAME unit_sampler
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_sampler.c ${_kf_root}/inference/sampler.c
            ${_kf_root}/core/err.c
    LIBS m)
target_include_directories(unit_sampler PRIVATE ${_kf_root}/inference ${_kf_root}/core)
kf_add_test(NAME unit_chat
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_chat.c ${_kf_root}/inference/chat.c
            ${_kf_root}/core/err.c)
target_include_directories(unit_chat PRIVATE ${_kf_root}/inference ${_kf_root}/core)
