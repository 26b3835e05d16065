/// The one table printer of the command-line tools (`check-config`, `status`,
/// `dead-letters list`): columns two spaces apart, each as wide as its widest cell, left-aligned
/// unless listed in `rightAligned`; the last column is not padded, so no line ends in spaces.
struct TextTable {
    var header: [String]
    var rows: [[String]] = []
    /// Indices of the columns aligned to the right (numbers).
    var rightAligned: Set<Int> = []

    init(header: [String], rightAligned: Set<Int> = []) {
        self.header = header
        self.rightAligned = rightAligned
    }

    mutating func append(_ row: [String]) {
        precondition(row.count == header.count, "a row of \(row.count) cells in a table of \(header.count) columns")
        rows.append(row)
    }

    /// The table, one line per row after the header, each ending in a newline.
    var rendered: String {
        let all = [header] + rows
        let widths = header.indices.map { i in all.map { $0[i].count }.max() ?? 0 }
        var out = ""
        for row in all {
            var line = ""
            for (i, cell) in row.enumerated() {
                let pad = String(repeating: " ", count: widths[i] - cell.count)
                if i > 0 { line += "  " }
                if rightAligned.contains(i) {
                    line += pad + cell
                } else {
                    line += i == row.count - 1 ? cell : cell + pad
                }
            }
            out += line + "\n"
        }
        return out
    }
}
