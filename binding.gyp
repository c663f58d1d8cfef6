{
  "targets": [
    {
      "target_name": "vhost_sys",
      "sources": ["native/vhost_sys.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++20"],
      "cflags_cc": ["-std=gnu++17", "-fexceptions", "-Wall", "-Wextra"]
    }
  ]
}
