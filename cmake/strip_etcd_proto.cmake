# cmake -DIN=<etcd .proto as Debian ships it> -DOUT=<cleaned copy> -P strip_etcd_proto.cmake
# Drops what only Go needs: the gogoproto import and options, and the grpc-gateway import and
# its `option (google.api.http) = {...};` blocks. Message and service definitions are kept
# byte for byte, so the wire format is etcd's own.
file(READ "${IN}" text)
string(REGEX REPLACE "import \"gogoproto/gogo.proto\";" "" text "${text}")
string(REGEX REPLACE "import \"google/api/annotations.proto\";" "" text "${text}")
string(REGEX REPLACE "option \\(gogoproto\\.[a-z_]+\\) = [a-z]+;" "" text "${text}")
string(REGEX REPLACE "\\[\\(gogoproto\\.[a-z_]+\\) *= *[a-z]+\\]" "" text "${text}")
# The blocks nest one level (additional_bindings { ... }).
string(REGEX REPLACE "option \\(google\\.api\\.http\\) = {([^{}]*{[^{}]*})*[^{}]*};" "" text
  "${text}")
if(text MATCHES "gogoproto|google\\.api")
  message(FATAL_ERROR "${IN}: gogoproto or google.api options left after stripping")
endif()
file(WRITE "${OUT}" "${text}")
