# Fails when the library defines code of Gloo's own: src/dist/context.cpp reads gloo's headers for
# declarations only (CMakeLists.txt says why), so no function, vtable or type info of namespace
# gloo, nor of ProcessGroupGloo's classes built on gloo's (GlooStore, the works), may be compiled
# into it: such code would follow the headers' gloo, not the one inside libtorch.
#   cmake -DNM=nm -DARCHIVE=libouroboros.a -P cmake/check_no_gloo_code.cmake
execute_process(COMMAND ${NM} --defined-only ${ARCHIVE} OUTPUT_VARIABLE symbols
                RESULT_VARIABLE rc ERROR_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "check_no_gloo_code: ${NM} could not read ${ARCHIVE}")
endif()
# Itanium-mangled names: [thunk or vtable/typeinfo prefix] N [cv-qualifiers] then the scope.
set(prefix "_Z(T[VIS]|Th[n0-9_]*|Tv[n0-9_]*|GV)?N?[KVr]*")
set(gloo_scope "4gloo")
set(gloo_classes "4c10d16ProcessGroupGloo(9GlooStore|9AsyncWork|8SendWork|8RecvWork)")
string(REGEX MATCHALL " ${prefix}(${gloo_scope}|${gloo_classes})[^\n]*" hits "${symbols}")
string(REGEX MATCHALL " _ZTVN4c10d16ProcessGroupGlooE\n" vtable "${symbols}")
list(APPEND hits ${vtable})
if(hits)
  list(LENGTH hits n)
  list(GET hits 0 first)
  string(STRIP "${first}" first)
  message(FATAL_ERROR "check_no_gloo_code: ${ARCHIVE} defines ${n} symbol(s) of Gloo's own code, "
                      "e.g. ${first}: keep gloo's types behind pointers in src/dist/context.cpp")
endif()
