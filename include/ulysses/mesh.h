// ulysses: dp x cp x tp rank arithmetic.
//
// Global ranks are laid out with cp fastest, then tp, then dp:
//
//   rank = (dp_index * tp + tp_index) * cp + cp_index
//
// so each cp group (the ranks that share one sequence and exchange the most bytes per step) is a
// run of adjacent ranks, i.e. GPUs of one node on one NVLink island whenever cp <= GPUs per node.
//
//   dp=2, cp=4, tp=2 (16 ranks):     cp groups: {0..3} {4..7} {8..11} {12..15}
//                                    tp groups: {0,4} {1,5} ... {8,12} ...
//                                    dp groups: {0,8} {1,9} ...
//
// Host-only header: no CUDA, NCCL or cuDNN include.
#pragma once

#include <string>
#include <vector>

#include "ulysses/status.h"

namespace ulysses {

struct MeshShape {
  int dp = 1;
  int cp = 1;
  int tp = 1;

  int world_size() const { return dp * cp * tp; }
  Status validate() const;
  bool operator==(const MeshShape&) const = default;
};

/// A rank's position in the mesh.
struct MeshCoord {
  int dp = 0;
  int cp = 0;
  int tp = 0;
  bool operator==(const MeshCoord&) const = default;
};

enum class MeshAxis : int { kDp = 0, kCp = 1, kTp = 2 };

class Mesh {
 public:
  /// Validates that every degree is >= 1 and that dp * cp * tp == world_size.
  static Result<Mesh> create(MeshShape shape, int world_size);

  const MeshShape& shape() const { return shape_; }
  int world_size() const { return shape_.world_size(); }

  MeshCoord coord(int rank) const;
  int rank(MeshCoord coord) const;

  /// Global ranks of the group along `axis` that contains `rank`, in axis-index order.
  std::vector<int> group(MeshAxis axis, int rank) const;
  /// Index of the group along `axis` that contains `rank` (a colour for communicator splits: ranks
  /// with the same colour form one group), in [0, world_size / degree(axis)).
  int group_color(MeshAxis axis, int rank) const;
  int degree(MeshAxis axis) const;

 private:
  explicit Mesh(MeshShape shape) : shape_(shape) {}
  MeshShape shape_;
};

}  // namespace ulysses
