// Hostile and careless input, as an attacker or a hurried user would give it: every case is refused
// with one `lumen: error:` line and exit 2, without blocking, decoding a bomb, reading forever, writing
// a partial output or a NaN, and the few that may go on (--allow-truncated) say so.
#include "common.h"

#include <lumen/files.h>
#include <lumen/image.h>
#include <lumen/output.h>

#include <opencv2/imgcodecs.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

namespace lumen::test::hostile_tests {

namespace fs = std::filesystem;

std::string q(const std::string& s) { return "'" + s + "'"; }

const std::string kPt = LUMEN_SHARED_DIR "/models/mobilenet_v2_imagenet.pt";
const std::string kCard = LUMEN_SHARED_DIR "/models/mobilenet_v2_imagenet.json";
const std::string kModel = "--model " + q(kPt) + " --card " + q(kCard);
const std::string kImage = q(LUMEN_SHARED_DIR "/images/cat.png");

void write_bytes(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A PNG that declares width x height and holds one compressed row: kilobytes on disk, gigabytes decoded.
std::string png_bomb(uint32_t width, uint32_t height) {
  auto be = [](uint32_t v) { return std::string{char(v >> 24), char(v >> 16), char(v >> 8), char(v)}; };
  auto chunk = [&](const std::string& type, const std::string& data) {
    const std::string body = type + data;
    return be(static_cast<uint32_t>(data.size())) + body + be(static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(body.data()), body.size())));
  };
  std::string row(1 + 3 * static_cast<size_t>(std::min<uint32_t>(width, 1000)), '\0');
  uLongf size = compressBound(row.size());
  std::string packed(size, '\0');
  compress(reinterpret_cast<Bytef*>(packed.data()), &size, reinterpret_cast<const Bytef*>(row.data()), row.size());
  packed.resize(size);
  return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", be(width) + be(height) + std::string("\x08\x02\x00\x00\x00", 5)) +
         chunk("IDAT", packed) + chunk("IEND", "");
}

struct Case {
  std::string name, args, needle;
};

// One line, exit 2, and no output folder left behind.
void expect_refused(const Case& c) {
  SCOPED_TRACE(c.name);
  const std::string out = temp_dir("hostile-out") + "/o";
  const auto r = run_cli(c.args + " --out " + q(out));
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(r.err.rfind("lumen: error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
  EXPECT_NE(r.err.find(c.needle), std::string::npos) << "expected '" << c.needle << "' in: " << r.err;
  EXPECT_FALSE(fs::exists(out)) << "a failed run left " << out;
}

TEST(Hostile, FilesThatAreNotFilesBombsAndEndlessStreams) {
  const std::string dir = temp_dir("hostile-files");
  const std::string fifo = dir + "/pipe.png";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  write_bytes(dir + "/bomb.png", png_bomb(30000, 30000));     // 900 megapixels
  write_bytes(dir + "/between.png", png_bomb(10000, 10000));  // 100 megapixels: over 80, under OpenCV's 1 Gpx
  const std::string hot_dog = read_bytes(LUMEN_SHARED_DIR "/images/hot_dog.jpg");
  write_bytes(dir + "/cut.jpg", hot_dog.substr(0, hot_dog.size() / 2));
  write_bytes(dir + "/garbage.pt", std::string(4096, '\x5a'));
  write_bytes(dir + "/nul_card.json", std::string("{\"input\": \0}", 12));
  const std::vector<Case> cases{
      {"FIFO image", "explain " + kModel + " --image " + q(fifo), "is not a regular file"},
      {"FIFO model", "explain --model " + q(fifo) + " --card " + q(kCard) + " --image " + kImage, "is not a regular file"},
      {"FIFO card", "explain --model " + q(kPt) + " --card " + q(fifo) + " --image " + kImage, "is not a regular file"},
      {"FIFO labels", "explain " + kModel + " --labels " + q(fifo) + " --image " + kImage, "is not a regular file"},
      {"device labels", "explain " + kModel + " --labels /dev/zero --image " + kImage, "is not a regular file"},
      {"folder image", "explain " + kModel + " --image " + q(dir), "is a folder"},
      {"PNG bomb 900 Mpx", "explain " + kModel + " --image " + q(dir + "/bomb.png"), "30000x30000, over lumen's limit"},
      {"PNG bomb 100 Mpx", "explain " + kModel + " --image " + q(dir + "/between.png"), "10000x10000, over lumen's limit"},
      {"pixel limit option", "explain " + kModel + " --max-pixels 1000 --image " + kImage, "over lumen's limit of 1000 pixels"},
      {"truncated JPEG", "explain " + kModel + " --image " + q(dir + "/cut.jpg"), "is truncated"},
      {"garbage TorchScript", "explain --model " + q(dir + "/garbage.pt") + " --card " + q(kCard) + " --image " + kImage, "is not a valid TorchScript archive"},
      {"binary card", "explain --model " + q(kPt) + " --card " + q(dir + "/nul_card.json") + " --image " + kImage, "not a text file"},
  };
  for (const auto& c : cases) expect_refused(c);
  // Allowed on request, with a warning that says what was explained.
  const std::string out = temp_dir("hostile-truncated");
  const auto r = run_cli("explain " + kModel + " --allow-truncated --image " + q(dir + "/cut.jpg") + " --out " + q(out));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("is truncated; explained as decoded"), std::string::npos) << r.err;
  const auto run = read_json(out + "/run.json");
  EXPECT_NE(run["images"][0]["warnings"][0].get<std::string>().find("truncated"), std::string::npos);
}

TEST(Hostile, SettingsThatAreNaNOutOfRangeOrRepeated) {
  const std::vector<Case> cases{
      {"NaN box threshold", "explain " + kModel + " --box-threshold nan --image " + kImage, "--box-threshold must be a finite number"},
      {"NaN alpha", "explain " + kModel + " --alpha NaN --image " + kImage, "--alpha must be a finite number"},
      {"NaN noise", "explain " + kModel + " --method smoothgrad --noise nan --image " + kImage, "--noise must be a finite number"},
      {"infinite layer weight", "explain " + kModel + " --layer features.18,features.17 --aggregate weighted --layer-weights 1 inf --image " + kImage,
       "must be a finite number"},
      {"alpha 5", "explain " + kModel + " --alpha 5 --image " + kImage, "--alpha"},
      {"negative box threshold", "explain " + kModel + " --box-threshold -1 --image " + kImage, "--box-threshold"},
      {"no threads", "explain " + kModel + " --threads 0 --image " + kImage, "--threads"},
      {"negative threads", "explain " + kModel + " --threads -1 --image " + kImage, "--threads"},
      {"class and top-k", "explain " + kModel + " --class 3 --top-k 2 --image " + kImage, "--class excludes --top-k"},
      {"method twice", "explain " + kModel + " --method gradcam,gradcam --image " + kImage, "method 'gradcam' is given twice"},
      {"method twice apart", "explain " + kModel + " --method saliency,gradcam,saliency --image " + kImage, "method 'saliency' is given twice"},
      {"layer twice", "explain " + kModel + " --layer features.18,features.18 --image " + kImage, "layer 'features.18' is given twice"},
      {"class twice", "explain " + kModel + " --class 3 3 --image " + kImage, "class '3' is given twice"},
  };
  for (const auto& c : cases) expect_refused(c);
}

TEST(Hostile, CardsWithMissingOrMistypedFields) {
  const std::string dir = temp_dir("hostile-cards");
  fs::create_directories(dir + "/labels_dir");
  write_bytes(dir + "/empty.txt", "");
  const std::string input = R"("input": {"size": [224, 224], "mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5]})";
  const std::vector<std::pair<std::string, std::string>> cards{
      {R"({"name": "no input"})", "\"input\" (size, mean, std) is required"},
      {R"({"input": {"size": [224, 224], "std": [1, 1, 1]}})", "input.mean is required"},
      {R"({"input": {"size": [224.5, 224], "mean": [1, 1, 1], "std": [1, 1, 1]}})", "input.size must hold whole numbers"},
      {R"({"input": {"size": [224, 224], "mean": [1, "a", 1], "std": [1, 1, 1]}})", "input.mean must hold finite numbers"},
      {R"({"input": {"size": [224, 224], "mean": [1, 1, 1], "std": [1, 0, 1]}})", "input.std values must be positive"},
      {R"({"input": {"size": [224, 224], "mean": [1, 1, 1], "std": [1, 1, 1], "color_order": 3}})", "input.color_order must be"},
      {"{" + input + R"(, "output": {"labels_file": "labels_dir"}})", "is a folder, not a file"},
      {"{" + input + R"(, "output": {"labels_file": "empty.txt"}})", "is empty"},
      {"[1, 2]", "must be a JSON object"},
  };
  for (size_t i = 0; i < cards.size(); ++i) {
    const std::string card = dir + "/card" + std::to_string(i) + ".json";
    write_bytes(card, cards[i].first);
    expect_refused({cards[i].first, "explain --model " + q(kPt) + " --card " + q(card) + " --image " + kImage, cards[i].second});
  }
}

TEST(Hostile, DamagedModelsAndSizesAModelDoesNotTake) {
  const std::string dir = temp_dir("hostile-models");
  // The shared model with its first tensor record cut to 100 bytes: a valid zip that loads.
  const std::string py = std::string(LUMEN_PYTHON) + " - <<'EOF'\n"
                         "import zipfile\n"
                         "zin = zipfile.ZipFile('" + kPt + "')\n"
                         "zout = zipfile.ZipFile('" + dir + "/short.pt', 'w')\n"
                         "cut = False\n"
                         "for item in zin.infolist():\n"
                         "    data = zin.read(item.filename)\n"
                         "    if '/data/' in item.filename and len(data) > 1000 and not cut:\n"
                         "        data, cut = data[:100], True\n"
                         "    zout.writestr(item, data)\n"
                         "zout.close()\n"
                         "import onnx\n"
                         "from onnx import helper, TensorProto\n"
                         "shape = helper.make_tensor('s', TensorProto.INT64, [2], [50000, 50000])\n"
                         "nodes = [helper.make_node('Constant', [], ['shp'], value=shape),\n"
                         "         helper.make_node('ConstantOfShape', ['shp'], ['big'], value=helper.make_tensor('v', TensorProto.FLOAT, [1], [1.0])),\n"
                         "         helper.make_node('ReduceSum', ['big'], ['s1'], keepdims=0), helper.make_node('Add', ['x', 's1'], ['y'])]\n"
                         "g = helper.make_graph(nodes, 'g', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 3, 8, 8])],\n"
                         "                      [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 3, 8, 8])])\n"
                         "onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid('', 13)]), '" + dir + "/fill.onnx')\n"
                         "EOF";
  ASSERT_EQ(std::system(py.c_str()), 0);
  const std::string onnx = q(LUMEN_SHARED_DIR "/models/mobilenet_v2_imagenet.onnx");
  const std::vector<Case> cases{
      {"short storage", "explain --model " + q(dir + "/short.pt") + " --card " + q(kCard) + " --image " + kImage, "is damaged"},
      {"ONNX at another size", "explain --model " + onnx + " --card " + q(kCard) + " --input-size 100 100 --image " + kImage,
       "declares a fixed 224x224 input, not 100x100"},
      {"ConstantOfShape of 2.5e9", "explain --model " + q(dir + "/fill.onnx") + " --card " + q(kCard) + " --image " + kImage,
       "over lumen's limit of 2^30"},
  };
  for (const auto& c : cases) expect_refused(c);
  const auto probe = run_cli("layers " + onnx + " --input-size 100000 100000");
  EXPECT_EQ(probe.code, 2);
  EXPECT_NE(probe.err.find("more than the memory available allows"), std::string::npos) << probe.err;
}

// A dataset folder whose CSVs point outside it, hold numbers that are no class, or boxes off the image.
TEST(Hostile, DatasetsThatPointOutsideOrLie) {
  const std::string image = LUMEN_SHARED_DIR "/images/cat.png";
  auto dataset = [&](const std::string& name, const std::string& labels, const std::string& boxes) {
    const std::string dir = temp_dir("hostile-data-" + name);
    fs::create_directories(dir + "/images");
    fs::copy_file(image, dir + "/images/cat.png", fs::copy_options::overwrite_existing);
    write_bytes(dir + "/labels.csv", "image,label\n" + labels);
    if (!boxes.empty()) write_bytes(dir + "/boxes.csv", "image,label,x0,y0,x1,y1\n" + boxes);
    return dir;
  };
  const std::vector<std::pair<std::string, std::string>> sets{
      {dataset("up", "../../../etc/passwd,1\n", ""), "must be a path inside the images/ folder"},
      {dataset("absolute", "/etc/passwd,1\n", ""), "must be a path inside the images/ folder"},
      {dataset("huge-label", "cat.png,1e300\n", ""), "label '1e300' is not a class index"},
      {dataset("box-label", "cat.png,285\n", "cat.png,1e300,0,0,10,10\n"), "label '1e300' is not a class index"},
      {dataset("box-outside", "cat.png,285\n", "cat.png,285,5000,5000,5100,5100\n"), "lies outside the"},
      // A name the file system refuses (found by the dataset fuzz target: std::filesystem threw).
      {dataset("name-too-long", "a." + std::string(5000, 'f') + ".png,2\n", ""), "image not found"},
  };
  for (const auto& [dir, needle] : sets)
    expect_refused({dir, "eval " + kModel + " --data " + q(dir) + " --metrics loc", needle});
}

TEST(Hostile, ReportsEscapeNamesAndCsvQuotesThem) {
  const std::string dir = temp_dir("hostile-audit");
  fs::create_directories(dir + "/images");
  const std::string evil = "<img src=x onerror=alert(1)>.png";
  fs::copy_file(LUMEN_SHARED_DIR "/images/cat.png", dir + "/images/" + evil);
  write_bytes(dir + "/labels.csv", "image,label\n" + evil + ",285\n");
  write_bytes(dir + "/boxes.csv", "image,label,x0,y0,x1,y1\n" + evil + ",285,0,0,4,4\n");
  const std::string out = temp_dir("hostile-audit-out");
  const auto r = run_cli("audit " + kModel + " --data " + q(dir) + " --threshold 0.99 --out " + q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string html = read_bytes(out + "/index.html");
  EXPECT_EQ(html.find("<img src=x"), std::string::npos) << "an image name reached the page as markup";
  EXPECT_NE(html.find("&lt;img src=x onerror=alert(1)&gt;"), std::string::npos);
  EXPECT_NE(read_bytes(out + "/audit.csv").find(evil), std::string::npos);
}

// Inputs the fuzzers found (fuzz/, scripts/sanitize.sh), kept as regression tests.
TEST(Hostile, FuzzFindingsStayFixed) {
  // A .npy shape item that is no number threw std::invalid_argument past every lumen::Error handler.
  auto npy = [](const std::string& shape) {
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
    header += std::string(63 - header.size() % 64, ' ') + "\n";
    const auto n = static_cast<uint16_t>(header.size());
    return std::string("\x93NUMPY\x01\x00", 8) + char(n & 0xFF) + char(n >> 8) + header + std::string(80, '\0');
  };
  EXPECT_THROW(decode_npy(npy("(4, x5)")), Error);
  EXPECT_THROW(decode_npy(npy("(99999999999999999999, 5)")), Error);
  EXPECT_THROW(decode_npy(npy("(4000000000, 4000000000)")), Error);  // the product overflowed
  EXPECT_THROW(decode_npy(npy("(0, 5)")), Error);                     // an empty array: memcpy to null
  EXPECT_EQ(decode_npy(npy("(4, 5)")).size(), cv::Size(5, 4));
  // A PNG declaring 2^32-1 x 2^32-1 overflowed the pixel count's 64-bit product.
  auto be = [](uint32_t v) { return std::string{char(v >> 24), char(v >> 16), char(v >> 8), char(v)}; };
  const std::string huge = std::string("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", 16) + be(0xFFFFFFFFu) + be(0xFFFFFFFFu) + std::string(9, '\0');
  try {
    decode_image(huge, "huge.png");
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("4294967295x4294967295, over lumen's limit"), std::string::npos) << e.what();
  }
  // A WebP whose VP8 frame declares 0x0 crashed inside OpenCV's decoder.
  std::string webp = std::string("RIFF\x60\0\0\0WEBPVP8 \x54\0\0\0", 20) + std::string(84, '\0');
  EXPECT_THROW(decode_image(webp, "zero.webp"), Error);
  // A 5 KB TorchScript zip whose directory declares a 4 GB record made LibTorch allocate 4 GB.
  std::string zip = read_bytes(LUMEN_SOURCE_DIR "/fuzz/corpus/torchscript/tiny-conv.pt.seed");
  const auto entry = zip.find(std::string("PK\x01\x02", 4));
  ASSERT_NE(entry, std::string::npos);
  for (int i = 0; i < 4; ++i) zip[entry + 24 + static_cast<size_t>(i)] = '\xF0';
  const std::string path = temp_dir("hostile-zip") + "/declares-4gb.pt";
  write_bytes(path, zip);
  try {
    Model::load(path);
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot hold"), std::string::npos) << e.what();
  }
}

// TorchScript files the fuzzer made that crash LibTorch 1.13's reader (a SEGV in its unpickler) or make
// it allocate 2.6 GB from 5 KB: read first in a child process, they are refused and this process lives.
TEST(Hostile, TorchScriptThatCrashesLibTorchIsContained) {
  try {
    Model::load(LUMEN_SOURCE_DIR "/tests/hostile/unpickler_segv.pt.bin");
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("crashed LibTorch's reader in a separate process"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Model::load(LUMEN_SOURCE_DIR "/tests/hostile/unpickler_2gb.pt.bin"), Error);
  EXPECT_NO_THROW(Model::load(LUMEN_SHARED_DIR "/models/mobilenet_v2_imagenet.pt"));
}

// A commit that fails part-way leaves the folder as it was: files it had moved are taken back and
// files of an earlier run they replaced are restored.
TEST(Hostile, FailedCommitRollsBack) {
  const std::string dir = temp_dir("hostile-commit");
  write_bytes(dir + "/a.txt", "earlier");
  write_bytes(dir + "/sub", "a file where the folder sub/ must go: moving sub/b.txt fails");
  {
    OutputDir out(dir);
    out.write("a.txt", "new");
    out.write("sub/b.txt", "new");
    EXPECT_THROW(out.commit(), Error);
  }
  EXPECT_EQ(read_bytes(dir + "/a.txt"), "earlier");
  EXPECT_TRUE(fs::is_regular_file(dir + "/sub"));
  for (const auto& e : fs::directory_iterator(dir)) EXPECT_EQ(e.path().filename().string().rfind(".lumen-staging", 0), std::string::npos);
  // Writing one name twice is a mistake of the caller, refused at once.
  OutputDir twice(dir);
  twice.write("c.txt", "1");
  EXPECT_THROW(twice.write("c.txt", "2"), Error);
}

// Two evals into one folder: the second is refused, naming the first; Ctrl-C keeps what was written and
// the same command resumes from it.
TEST(Hostile, EvalLocksItsFolderAndResumesAfterAnInterrupt) {
  const std::string out = temp_dir("hostile-eval");
  fs::create_directories(out);
  const std::string eval = "eval " + kModel + " --data " + q(LUMEN_SHARED_DIR "/data/imagenet-loc-dev") +
                           " --metrics loc,deletion --steps 10 --batch 2 --limit 300 --out " + q(out);
  {
    const int fd = ::open((out + "/records.jsonl.lock").c_str(), O_RDWR | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
    ASSERT_EQ(::pwrite(fd, "4242", 4, 0), 4);
    const auto r = run_cli(eval);
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("another lumen run (process 4242) is writing"), std::string::npos) << r.err;
    ::close(fd);
  }
  // Ctrl-C once the run has written a record of its own (not after a fixed time: under the sanitizers on
  // a busy machine 4 s once passed before the first record). 300 images take far longer.
  const std::string ctrl_c_script = out + "/../ctrl-c-after-a-new-record.sh";
  {
    const std::string records = q(out + "/records.jsonl");
    std::ofstream script(ctrl_c_script);
    script << "lines() { if [ -f " << records << " ]; then wc -l < " << records << "; else echo 1; fi; }\n"
              "before=$(lines)\n"
              "\"$@\" & pid=$!\n"
              "i=0\n"
              "while [ $i -lt 1800 ] && kill -0 $pid 2>/dev/null && [ \"$(lines)\" -le \"$before\" ]; do sleep 0.1; i=$((i + 1)); done\n"
              "kill -INT $pid 2>/dev/null\n"
              "wait $pid\n";
  }
  const std::string ctrl_c = "sh " + q(ctrl_c_script) + " ";
  const auto first = run_cli_prefixed(ctrl_c, eval);
  EXPECT_EQ(first.code, 130) << first.err;
  EXPECT_NE(first.err.find("lumen: interrupted; "), std::string::npos) << first.err;
  EXPECT_NE(first.err.find("run the same command again to resume"), std::string::npos) << first.err;
  const auto second = run_cli_prefixed(ctrl_c, eval);
  EXPECT_NE(second.err.find("already in"), std::string::npos) << "the second run did not resume: " << second.err;
}

}  // namespace lumen::test::hostile_tests
